/*
 * chat.c - the chat request path, from the body to the last write.
 */
#include "chat.h"

#include "clients.h"
#include "cors.h"
#include "headers.h"
#include "log.h"
#include "metrics.h"
#include "reqbody.h"
#include "retry.h"
#include "usage.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK    8192 /* request body read size */
#define HDR_VALUE_MAX 4096
/*
 * The completion tokens charged to a request that sets no maximum (and
 * no DEFAULT_MAX_COMPLETION_TOKENS applies): Cerebras then reserves the
 * model's remaining sequence length, unknown here. The answer's headers
 * correct the budget either way.
 */
#define UNSET_MAX_TOKENS 8192

/* One chat request in flight: what the sink and the log line need. */
struct chat {
	struct worker *c_w;
	const struct request_io *c_io;
	struct resp *c_resp;
	struct slot c_slot;
	struct upstream_res c_res;
	int c_attempts_left;	  /* after the current one */
	int c_held;		  /* the current answer is not for the client */
	int64_t c_t0;		  /* accepted (or, if unknown, handed to us) */
	int64_t c_thread_ns;	  /* of that, waiting for a thread */
	double c_backlog_ms;	  /* before the accept, or -1 if unknown */
	char c_timing[64];	  /* the Server-Timing line of this attempt */
	struct usage_scan c_scan; /* tokens, read from the relayed answer */
	struct reqbody c_req;	  /* model and token estimate of the body */
	int c_req_ok;		  /* the body was a chat request */
	struct sched_request c_sreq; /* what the budgets are charged */
	int64_t c_hdr_ns;	     /* when this attempt's headers came */
	int c_learned;		     /* a probe's headers were settled */
	int c_stream;		     /* counted among the streams open */
	int c_poll_why;		     /* what made it ask again, or -1 */
	/* The limits on this attempt's answer, read once from its headers. */
	struct hdr_limit c_limits[HDR_NLIMITS];
	long c_rest_ms; /* its 429's Retry-After or reset (ms), else -1 */
	struct client c_client;		     /* who sent it (clients.h) */
	enum reqbody_kind c_kind;	     /* chat, or a legacy completion */
	const char *c_name;		     /* "chat" or "completions": logs */
	const char *c_url;		     /* the upstream endpoint */
	char c_rid[CHAT_REQUEST_ID_MAX + 1]; /* its id: the client's, or made */
};

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

/*
 * Collects the allow-listed client headers as "Name: value\n" lines, the
 * request's id (rid) as its X-Request-Id.
 */
static enum cp_err
forward_headers(const struct request_io *io, const char *rid, struct buf *out)
{
	const struct hdr_forward *f;
	const char *v;
	enum cp_err err;

	buf_reset(out);
	err = buf_printf(
		out, "Content-Type: application/json\nX-Request-Id: %s\n", rid);
	if (err)
		return err;
	for (f = hdr_request_allowed; f->hf_cgi != NULL; f++) {
		if (strcmp(f->hf_cgi, "HTTP_X_REQUEST_ID") == 0)
			continue; /* sent above */
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

void
chat_request_id(const struct request_io *io, char *out)
{
	static const char hex[] = "0123456789abcdef";
	static atomic_uint_fast64_t counter;
	const char *v = io->io_param(io->io_ctx, "HTTP_X_REQUEST_ID");
	unsigned char r[12];
	uint64_t n;
	size_t len = v != NULL ? strspn(v, "abcdefghijklmnopqrstuvwxyz"
					   "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
					   "0123456789._:@+/=-")
			       : 0;
	int i;

	if (len > 0 && len <= CHAT_REQUEST_ID_MAX && v[len] == '\0') {
		memcpy(out, v, len + 1);
	} else {
		if (getrandom(r, sizeof(r), GRND_NONBLOCK) !=
		    (ssize_t)sizeof(r)) {
			/* Unique on this host at least. */
			n = ((uint64_t)getpid() << 40) ^ (uint64_t)mono_ns() ^
			    atomic_fetch_add(&counter, 1);
			memset(r, 0, sizeof(r));
			memcpy(r, &n, sizeof(n));
		}
		memcpy(out, "req-", 4);
		for (i = 0; i < (int)sizeof(r); i++) {
			out[4 + 2 * i] = hex[r[i] >> 4];
			out[5 + 2 * i] = hex[r[i] & 15];
		}
		out[4 + 2 * sizeof(r)] = '\0';
	}
}

/* A model name as Cerebras' look: visible ASCII, no space. */
static int
model_name_ok(const char *m)
{
	for (; *m != '\0'; m++)
		if ((unsigned char)*m <= 0x20 || (unsigned char)*m >= 0x7f)
			return 0;
	return 1;
}

/* Reads and drops the body of a request refused before reading it. */
static void
drain_body(const struct request_io *io, long cap)
{
	char sink[4096];
	int n;

	while (cap > 0 && (n = io->io_read(io->io_ctx, sink, sizeof(sink))) > 0)
		cap -= n;
}

/* A declared Content-Type other than JSON or text/plain. */
static int
media_type_refused(const char *ct)
{
	size_t n;

	if (ct == NULL)
		return 0;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	n = strcspn(ct, ";");
	while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
		n--;
	if (n == 0)
		return 0;
	if ((n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
	    (n == 10 && strncasecmp(ct, "text/plain", 10) == 0))
		return 0;
	/* application/<something>+json */
	return !(n > 17 && strncasecmp(ct, "application/", 12) == 0 &&
		 strncasecmp(ct + n - 5, "+json", 5) == 0);
}

/* The log line of a request refused before it was read. */
static void
chat_log_denied(const struct chat *c, int status, const char *code,
		const char *detail)
{
	char rid[80];

	if (!c->c_w->w_cfg->log_requests)
		return;
	log_escape(c->c_rid, rid, sizeof(rid));
	log_info("%s id=%s client=%s status=%d total_ms=%.1f refused: %s "
		 "(%s)",
		 c->c_name, rid,
		 c->c_client.cl_name[0] ? c->c_client.cl_name : "-", status,
		 (double)(mono_ns() - c->c_t0) / 1e6, code, detail);
}

enum cp_err
chat_access(const struct config *cfg, const struct request_io *io,
	    struct resp *r, struct client *cl, const char **code, char *detail,
	    size_t detailsz)
{
	const char *origin = io->io_param(io->io_ctx, "HTTP_ORIGIN");
	enum client_verdict v;
	char msg[256];

	if (origin != NULL && !cors_origin_allowed(cfg->cors_origins, origin)) {
		drain_body(io, cfg->max_body_bytes);
		log_escape(origin, detail, detailsz);
		snprintf(msg, sizeof(msg),
			 "requests from the origin %s are not allowed here "
			 "(CORS_ALLOW_ORIGINS)",
			 detail);
		*code = "origin_not_allowed";
		resp_error(r, 403, "invalid_request_error", *code, msg, NULL);
		return CP_ERR_BADREQ;
	}
	clients_maybe_reload(cfg);
	v = clients_identify(
		cfg, io->io_param(io->io_ctx, "HTTP_AUTHORIZATION"),
		io->io_param(io->io_ctx, "HTTP_X_API_KEY"),
		io->io_param(io->io_ctx, "REMOTE_ADDR"),
		io->io_param(io->io_ctx, "HTTP_X_FORWARDED_FOR"), cl);
	if (v != CLIENT_OK) {
		drain_body(io, cfg->max_body_bytes);
		snprintf(detail, detailsz, "%s",
			 v == CLIENT_NO_TOKEN ? "no token" : "unknown token");
		*code = "invalid_proxy_token";
		resp_error(r, 401, "invalid_request_error", *code,
			   v == CLIENT_NO_TOKEN
				   ? "this proxy needs a client token: send "
				     "Authorization: Bearer <token> (the "
				     "SDKs' api_key) or x-api-key: <token>"
				   : "the client token is not valid",
			   "WWW-Authenticate: Bearer\r\n");
		return CP_ERR_BADREQ;
	}
	return CP_OK;
}

/*
 * Who may spend, checked before the body is read: the origin and the
 * client's token (chat_access), the declared media type. Refusals are
 * answered here, the body read and dropped, and nothing spent.
 */
static enum cp_err
chat_admit(struct chat *c)
{
	const struct config *cfg = c->c_w->w_cfg;
	const struct request_io *io = c->c_io;
	const char *code = NULL;
	char detail[128];

	if (chat_access(cfg, io, c->c_resp, &c->c_client, &code, detail,
			sizeof(detail)) != CP_OK) {
		chat_log_denied(c, c->c_resp->r_status, code, detail);
		return CP_ERR_BADREQ;
	}
	if (media_type_refused(io->io_param(io->io_ctx, "CONTENT_TYPE"))) {
		drain_body(io, cfg->max_body_bytes);
		chat_log_denied(c, 415, "unsupported_media_type",
				"Content-Type");
		resp_error(c->c_resp, 415, "invalid_request_error",
			   "unsupported_media_type",
			   "send the request as JSON "
			   "(Content-Type: application/json)",
			   NULL);
		return CP_ERR_BADREQ;
	}
	return CP_OK;
}

/*
 * Reads and checks what the client sent: the body into w_body, the
 * headers to forward into w_hdrs. Anything wrong is answered here (and
 * returned as an error).
 */
static enum cp_err
chat_read(struct chat *c)
{
	struct worker *w = c->c_w;
	char msg[128];
	enum cp_err err;

	err = read_body(c->c_io, &w->w_body);
	if (err == CP_ERR_TOOBIG) {
		snprintf(msg, sizeof(msg), "request body larger than %ld bytes",
			 w->w_cfg->max_body_bytes);
		resp_error(c->c_resp, 413, "invalid_request_error",
			   "request_too_large", msg, NULL);
		return err;
	}
	if (err) {
		resp_error(c->c_resp, 400, "invalid_request_error",
			   "bad_request_body",
			   "could not read the request body", NULL);
		return err;
	}
	if (w->w_body.b_len == 0) {
		resp_error(c->c_resp, 400, "invalid_request_error",
			   "empty_body",
			   "the request body is empty: send the chat "
			   "completion request as JSON",
			   NULL);
		return CP_ERR_BADREQ;
	}
	err = forward_headers(c->c_io, c->c_rid, &w->w_hdrs);
	if (err) {
		resp_error(c->c_resp, 400, "invalid_request_error",
			   "bad_headers", "request headers too large", NULL);
		return err;
	}
	c->c_req_ok =
		reqbody_read_kind(w->w_body.b_p, w->w_body.b_len, c->c_kind,
				  &c->c_req, msg, sizeof(msg)) == CP_OK;
	/* Checked before it spends a slot, a budget or an upstream request. */
	if (c->c_req_ok && c->c_req.rb_model[0] == '\0')
		snprintf(msg, sizeof(msg), "\"model\" is longer than %d bytes",
			 REQBODY_MODEL_MAX - 1);
	else if (c->c_req_ok && !model_name_ok(c->c_req.rb_model)) {
		/* It names Redis keys and log fields: no spaces or controls. */
		snprintf(msg, sizeof(msg),
			 "\"model\" may hold only visible ASCII characters");
		c->c_req.rb_model[0] = '\0';
	}
	if (!c->c_req_ok || c->c_req.rb_model[0] == '\0') {
		c->c_req_ok = 0;
		chat_log_denied(c, 400, "invalid_request_body", "body");
		resp_error(c->c_resp, 400, "invalid_request_error",
			   "invalid_request_body", msg, NULL);
		return CP_ERR_BADREQ;
	}
	/*
	 * Without a max, Cerebras reserves the model's whole sequence
	 * length: DEFAULT_MAX_COMPLETION_TOKENS, when set, is added. The
	 * only change the proxy ever makes to a body.
	 */
	if (c->c_req_ok && c->c_req.rb_max_completion < 0 &&
	    w->w_cfg->default_max_completion > 0 &&
	    reqbody_add_max_for(&c->c_req, &w->w_body,
				w->w_cfg->default_max_completion) == CP_OK)
		c->c_req.rb_max_completion = w->w_cfg->default_max_completion;
	/*
	 * The budgets' charge: the prompt's estimate plus the completion
	 * tokens asked for, as Cerebras charges at admission (reqbody.h).
	 */
	c->c_sreq.sr_model = c->c_req_ok ? c->c_req.rb_model : "";
	c->c_sreq.sr_tokens =
		!c->c_req_ok ? 1
			     : c->c_req.rb_prompt_est +
				       (c->c_req.rb_max_completion >= 0
						? c->c_req.rb_max_completion
						: UNSET_MAX_TOKENS);
	if (c->c_sreq.sr_tokens < 1)
		c->c_sreq.sr_tokens =
			1; /* the budgets count requests out by it */
	return CP_OK;
}

/* The log line of a request the proxy refused before any attempt. */
static void
chat_log_refusal(const struct chat *c, const char *code, long retry_after)
{
	char rid[80];
	char model[REQBODY_MODEL_MAX];

	if (!c->c_w->w_cfg->log_requests)
		return;
	log_escape(c->c_rid, rid, sizeof(rid));
	log_escape(c->c_req_ok && c->c_req.rb_model[0] ? c->c_req.rb_model
						       : "-",
		   model, sizeof(model));
	log_info("%s id=%s client=%s status=429 total_ms=%.1f model=%s "
		 "waited_for=%s refused: %s, Retry-After: %ld",
		 c->c_name, rid,
		 c->c_client.cl_name[0] ? c->c_client.cl_name : "-",
		 (double)(mono_ns() - c->c_t0) / 1e6, model,
		 slot_why_name(c->c_slot.s_why != SLOT_WHY_NONE
				       ? c->c_slot.s_why
				       : c->c_poll_why),
		 code, retry_after);
}

/* 429 for a client over its own limit: nothing was booked or charged. */
static void
refuse_client(struct chat *c, long secs, const char *extra)
{
	const struct sched_client *sc = c->c_sreq.sr_client;
	char rate[48];
	char msg[256];

	chat_log_refusal(c, "client_rate_limited", secs);
	if (c->c_slot.s_why == SLOT_WHY_CLIENT_CONC)
		snprintf(msg, sizeof(msg),
			 "client %s already has %ld requests in flight, its "
			 "limit; retry after the time in Retry-After",
			 c->c_client.cl_name, sc ? sc->sc_concurrent : 0L);
	else {
		config_rate_str(sc ? sc->sc_rate : 0, sc ? sc->sc_window_ms : 0,
				rate, sizeof(rate));
		snprintf(msg, sizeof(msg),
			 "client %s is over its rate limit of %s requests; "
			 "retry after the time in Retry-After",
			 c->c_client.cl_name, rate);
	}
	resp_error(c->c_resp, 429, "rate_limit_exceeded", "client_rate_limited",
		   msg, extra);
}

/* 429 when no slot could be had: no key in time, or the queue is full. */
static void
refuse_busy(struct chat *c)
{
	const struct slot *sl = &c->c_slot;
	char extra[64];
	char msg[256];
	long secs = (long)((sl->s_wait_us + 999999) / 1000000);

	if (secs < 1)
		secs = 1;
	snprintf(extra, sizeof(extra), "Retry-After: %ld\r\n", secs);
	if (sl->s_key == SLOT_CLIENT) {
		refuse_client(c, secs, extra);
		return;
	}
	chat_log_refusal(c,
			 sl->s_key == SLOT_ALL_RESTING ? "all_keys_cooling_down"
						       : "proxy_saturated",
			 secs);
	if (sl->s_key != SLOT_ALL_RESTING) {
		resp_error(
			c->c_resp, 429, "rate_limit_exceeded",
			"proxy_saturated",
			"the proxy is saturated: the next free slot is "
			"further away than its queue allows; retry after the "
			"time in Retry-After",
			extra);
		return;
	}
	if (sl->s_why >= 0 && sl->s_why < HDR_NLIMITS)
		snprintf(msg, sizeof(msg),
			 "the %s limit of every API key's organisation is "
			 "spent for this model; retry after the time in "
			 "Retry-After",
			 hdr_limit_names[sl->s_why]);
	else
		snprintf(msg, sizeof(msg),
			 "every API key of the proxy is resting after a rate "
			 "limit or refusal; retry after the time in "
			 "Retry-After");
	resp_error(c->c_resp, 429, "rate_limit_exceeded",
		   "all_keys_cooling_down", msg, extra);
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
 * whose slack is 50 us, ends the wait on time. Before that stretch the
 * slot is translated again (sched_retime): the host's estimate of Redis'
 * clock is fresher by then, and the stretch is longer than the drift
 * that estimate allows for (1 ms per second).
 */
static enum cp_err
chat_wait(struct chat *c)
{
	const struct request_io *io = c->c_io;
	int64_t deadline_ns = c->c_slot.s_deadline_ns;
	int64_t left = deadline_ns - mono_ns();

	if (left > 0 && io->io_wait_gone(io->io_ctx, deadline_ns - 2000000 -
							     left / 500) != 0)
		return CP_ERR_HUP;
	/* The host's estimate of Redis' clock may be tighter by now. */
	if (left > 0)
		sched_retime(&c->c_w->w_sched, &c->c_slot);
	sleep_until(c->c_slot.s_deadline_ns);
	return CP_OK;
}

/*
 * A slot for the next attempt, or the refusal answered. While a probe
 * is out for the request's budget, asks again every SCHED_POLL_US, as
 * long as QUEUE_MAX_WAIT_MS allows; CP_ERR_HUP if the client leaves.
 */
static enum cp_err
chat_reserve(struct chat *c)
{
	struct worker *w = c->c_w;
	const struct request_io *io = c->c_io;
	int64_t now;
	enum cp_err err;

	for (;;) {
		err = sched_reserve(&w->w_sched, &c->c_sreq, &c->c_slot);
		if (err) {
			resp_error(c->c_resp, 503, "service_unavailable",
				   "scheduler_unavailable",
				   "the proxy cannot reach its scheduler "
				   "(Redis); try again shortly",
				   "Retry-After: 1\r\n");
			return err;
		}
		if (c->c_slot.s_key != SLOT_POLL)
			break;
		c->c_poll_why = c->c_slot.s_why;
		now = mono_ns();
		if (now - c->c_t0 > w->w_cfg->queue_max_wait_ms * 1000000) {
			c->c_slot.s_key = SLOT_TOO_FAR;
			break;
		}
		if (io->io_wait_gone(io->io_ctx,
				     now + c->c_slot.s_wait_us * 1000) != 0)
			return CP_ERR_HUP;
	}
	if (c->c_slot.s_key < 0) {
		refuse_busy(c);
		return CP_ERR_BADREQ;
	}
	return CP_OK;
}

/*
 * How long the request waited before it was accepted, in ms, or -1 if
 * unknown: from the X-Request-Start header the web server may add ("t="
 * and seconds, milliseconds or microseconds since the epoch, as nginx's
 * $msec or Apache's %t give), taken when the handler starts, less the
 * wait for a thread since the accept.
 */
static double
backlog_ms(const struct request_io *io, int64_t thread_ns)
{
	const char *v = io->io_param(io->io_ctx, "HTTP_X_REQUEST_START");
	struct timespec now;
	char *end;
	double t, age;

	if (v == NULL)
		return -1;
	if (strncmp(v, "t=", 2) == 0)
		v += 2;
	if (*v < '0' || *v > '9')
		return -1;
	errno = 0;
	t = strtod(v, &end);
	if (errno != 0 || *end != '\0' ||
	    clock_gettime(CLOCK_REALTIME, &now) != 0)
		return -1;
	if (t >= 1e14)
		t /= 1e6; /* microseconds */
	else if (t >= 1e11)
		t /= 1e3; /* milliseconds */
	age = ((double)now.tv_sec + (double)now.tv_nsec / 1e9 - t) * 1e3 -
	      (double)thread_ns / 1e6;
	/* A clock apart from ours, or a forged header: not a wait. */
	if (age < -1.0 || age > 86400e3)
		return -1;
	return age < 0 ? 0.0 : age;
}

/*
 * The announced limit with the least left of it, as "tokens-minute:
 * 59000/60000", from this request's last upstream answer; "-" if none.
 */
static const char *
budget_str(const struct chat *c, char *buf, size_t bufsz)
{
	const struct hdr_limit *l = c->c_limits;
	double share, least = 2.0;
	size_t i, pick = 0;

	snprintf(buf, bufsz, "-");
	if (c->c_res.us_status == 0)
		return buf;
	for (i = 0; i < HDR_NLIMITS; i++) {
		if (!l[i].hl_known)
			continue;
		share = l[i].hl_limit > 0 ? (double)l[i].hl_remaining /
						    (double)l[i].hl_limit
					  : 0.0;
		if (share < least) {
			least = share;
			pick = i;
		}
	}
	if (least <= 1.0)
		snprintf(buf, bufsz, "%s:%lld/%lld", hdr_limit_names[pick],
			 l[pick].hl_remaining, l[pick].hl_limit);
	return buf;
}

static void
chat_log(const struct chat *c, int status, const char *outcome)
{
	const struct config *cfg = c->c_w->w_cfg;
	const struct slot *sl = &c->c_slot;
	const struct upstream_res *res = &c->c_res;
	char rid[80];
	char backlog[32];
	char ptok[24];
	char ctok[24];
	char budget[64];
	char model[REQBODY_MODEL_MAX];
	char est[48];

	if (!cfg->log_requests)
		return;
	if (c->c_backlog_ms < 0)
		snprintf(backlog, sizeof(backlog), "-");
	else
		snprintf(backlog, sizeof(backlog), "%.1f", c->c_backlog_ms);
	log_escape(c->c_rid, rid, sizeof(rid));
	log_escape(c->c_req_ok && c->c_req.rb_model[0] ? c->c_req.rb_model
						       : "-",
		   model, sizeof(model));
	if (!c->c_req_ok)
		snprintf(est, sizeof(est), "-");
	else if (c->c_req.rb_max_completion < 0)
		snprintf(est, sizeof(est), "%lld+?", c->c_req.rb_prompt_est);
	else
		snprintf(est, sizeof(est), "%lld+%lld", c->c_req.rb_prompt_est,
			 c->c_req.rb_max_completion);
	log_info("%s id=%s key=#%d(%s) slot=%lld wait_ms=%.1f "
		 "late_ms=%.3f clock_ms=%.3f "
		 "sent_mono=%.6f status=%d ttfb_ms=%.1f total_ms=%.1f "
		 "bytes=%zu new_conns=%ld backlog_ms=%s thread_ms=%.1f "
		 "client=%s model=%s est_tokens=%s prompt_tokens=%s "
		 "completion_tokens=%s "
		 "budget=%s waited_for=%s %s",
		 c->c_name, rid, sl->s_key, cfg->key_fps[sl->s_key],
		 (long long)sl->s_at_us, (double)sl->s_wait_us / 1000.0,
		 (double)sl->s_late_us / 1000.0,
		 (double)sl->s_clock_us / 1000.0,
		 (double)(sl->s_deadline_ns + sl->s_late_us * 1000) / 1e9,
		 status, res->us_ttfb_ms, (double)(mono_ns() - c->c_t0) / 1e6,
		 c->c_resp->r_bytes, res->us_connects, backlog,
		 (double)c->c_thread_ns / 1e6,
		 c->c_client.cl_name[0] ? c->c_client.cl_name : "-", model, est,
		 count_str(c->c_scan.sc_usage.u_prompt, ptok, sizeof(ptok)),
		 count_str(c->c_scan.sc_usage.u_completion, ctok, sizeof(ctok)),
		 budget_str(c, budget, sizeof(budget)),
		 sl->s_wait_us > 0 && sl->s_why != SLOT_WHY_NONE
			 ? slot_why_name(sl->s_why)
			 : slot_why_name(c->c_poll_why),
		 outcome);
}

/*
 * Tells the scheduler how the attempt went: its budget learns from the
 * answer's limits and is charged its real usage (see sched_settle). At
 * the headers (a probe's), the usage follows when the answer ends. A 429
 * is counted in the metrics here, under the limit the scheduler found
 * spent: the log line and the metrics name the same one.
 */
static void
chat_settle(struct chat *c, int at_headers, long status)
{
	struct sched_outcome so;
	int ran_out;

	memset(&so, 0, sizeof(so));
	so.so_mode = at_headers	    ? SETTLE_HEADERS
		     : c->c_learned ? SETTLE_USAGE
				    : SETTLE_ANSWER;
	so.so_status = status;
	so.so_rest_ms = c->c_rest_ms;
	so.so_limits = status != 0 ? c->c_limits : NULL;
	so.so_hdr_ns = c->c_hdr_ns;
	so.so_used = -1;
	if (!at_headers && !c->c_held && c->c_scan.sc_usage.u_prompt >= 0 &&
	    c->c_scan.sc_usage.u_completion >= 0)
		so.so_used = c->c_scan.sc_usage.u_prompt +
			     c->c_scan.sc_usage.u_completion;
	ran_out = sched_settle(&c->c_w->w_sched, &c->c_slot, &so);
	/* A 429 is settled once: at its headers (a probe's) or its end. */
	if (status == 429 && so.so_mode != SETTLE_USAGE)
		metrics_rate_limited(c->c_slot.s_key, ran_out);
}

/* The sink: the upstream's answer goes to the client, unless held back. */
static enum cp_err
sink_begin(void *ctx, long status, int sse, const char *hdrs)
{
	struct chat *c = ctx;
	char extra[sizeof(c->c_timing) + 40];
	long ms;

	c->c_rest_ms = status == 429 ? hdr_cooldown_ms(hdrs) : -1;
	c->c_hdr_ns = mono_ns();
	hdr_limits(hdrs, c->c_limits);
	/*
	 * A probe's headers are what the requests waiting for it need: they
	 * are settled now, its usage when it ends.
	 */
	if (c->c_slot.s_probe && !c->c_learned) {
		chat_settle(c, 1, status);
		c->c_learned = 1;
	}
	/*
	 * An answer that will be retried never reaches the client, nor does
	 * a refusal of our key (upstream error bodies have been known to
	 * echo parts of the key).
	 */
	c->c_held = !retry_relays(status, c->c_attempts_left);
	if (c->c_held)
		return CP_OK;
	usage_scan_free(&c->c_scan);
	usage_scan_init(&c->c_scan, sse);
	if (sse && !c->c_stream) {
		c->c_stream = 1;
		metrics_stream(1);
	}
	/*
	 * A 429 relayed after the last attempt: Cerebras sends no
	 * Retry-After, so it is the reset of the limit that ran out (else
	 * how long the proxy rests such a key), for the SDKs that wait on it.
	 */
	if (status == 429 && !hdr_has(hdrs, "retry-after")) {
		ms = c->c_rest_ms;
		if (ms < 0)
			ms = c->c_w->w_cfg->key_cooldown_ms;
		snprintf(extra, sizeof(extra), "%sRetry-After: %ld\r\n",
			 c->c_timing, ms < 1000 ? 1 : (ms + 999) / 1000);
		return resp_relay_begin(c->c_resp, status, sse, hdrs, extra);
	}
	return resp_relay_begin(c->c_resp, status, sse, hdrs, c->c_timing);
}

static enum cp_err
sink_body(void *ctx, const char *data, size_t len)
{
	struct chat *c = ctx;
	enum cp_err err;

	if (c->c_held)
		return CP_OK;
	err = resp_write(c->c_resp, data, len);
	/* Only what went out: for the budgets and the log line. */
	if (err == CP_OK)
		usage_scan_feed(&c->c_scan, data, len);
	return err;
}

static int
sink_gone(void *ctx)
{
	struct chat *c = ctx;

	return c->c_io->io_gone(c->c_io->io_ctx);
}

/* Sends the request on the slot's key; the scheduler learns the answer. */
static enum cp_err
chat_forward(struct chat *c)
{
	struct worker *w = c->c_w;
	struct upstream_req ur;
	struct upstream_sink sink = {sink_begin, sink_body, sink_gone, c};
	enum cp_err err;

	snprintf(c->c_timing, sizeof(c->c_timing),
		 "Server-Timing: queue;dur=%.1f\r\n",
		 (double)(mono_ns() - c->c_t0) / 1e6);
	ur.ur_url = c->c_url;
	ur.ur_key = w->w_cfg->keys[c->c_slot.s_key];
	ur.ur_hdr_lines = w->w_hdrs.b_p;
	ur.ur_body = w->w_body.b_p;
	ur.ur_body_len = w->w_body.b_len;
	c->c_held = 0;
	c->c_hdr_ns = 0;
	c->c_rest_ms = -1;
	c->c_learned = 0;
	err = upstream_forward(&w->w_up, &ur, &sink, &c->c_res);
	usage_scan_end(&c->c_scan);
	return err;
}

/* What the log line says of an attempt that did not simply succeed. */
static const char *
attempt_detail(const struct chat *c, char *buf, size_t bufsz)
{
	const struct upstream_res *res = &c->c_res;

	if (res->us_detail[0] != '\0')
		return res->us_detail;
	if (res->us_status == 401 || res->us_status == 403)
		snprintf(buf, bufsz, "upstream answered %ld to the API key",
			 res->us_status);
	else
		snprintf(buf, bufsz, "upstream answered %ld", res->us_status);
	return buf;
}

/*
 * Carries out the verdict on the last attempt, ends the response, and
 * only then logs the request, so the log says how it really ended.
 */
static void
chat_finish(struct chat *c, const struct retry_verdict *v)
{
	struct resp *r = c->c_resp;
	char detail[64];
	enum cp_err err;

	if (v->rv_action == RETRY_FAIL)
		resp_error(r, v->rv_status, v->rv_type, v->rv_code,
			   v->rv_message, NULL);
	else if (v->rv_action == RETRY_CUT)
		resp_cut(r);
	err = resp_finish(r);
	usage_scan_end(&c->c_scan);
	if (v->rv_action == RETRY_GONE || err == CP_ERR_HUP)
		chat_log(c, r->r_started ? r->r_status : 499, "client left");
	else if (v->rv_action == RETRY_RELAY)
		chat_log(c, r->r_status, "ok");
	else
		chat_log(c, r->r_status,
			 attempt_detail(c, detail, sizeof(detail)));
}

/* Reads, reserves, waits, forwards (again on another key), finishes. */
/*
 * The client's own limits go with its reservations: its seat among the
 * client's requests in flight gets an id no other request has.
 */
static void
chat_client_limits(struct chat *c)
{
	static const char hex[] = "0123456789abcdef";
	static atomic_uint_fast64_t counter;
	const struct sched_client *sc = &c->c_client.cl_limits;
	unsigned char r[8];
	uint64_t n;
	int i;

	if (sc->sc_rate <= 0 && sc->sc_concurrent <= 0)
		return;
	if (getrandom(r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
		/* Unique on this host at least: pid, a counter, the clock. */
		n = ((uint64_t)getpid() << 40) ^ (uint64_t)mono_ns() ^
		    atomic_fetch_add(&counter, 1);
		memcpy(r, &n, sizeof(r));
	}
	for (i = 0; i < 8; i++) {
		c->c_sreq.sr_seat[2 * i] = hex[r[i] >> 4];
		c->c_sreq.sr_seat[2 * i + 1] = hex[r[i] & 15];
	}
	c->c_sreq.sr_seat[16] = '\0';
	c->c_sreq.sr_client = sc;
}

static void
chat_run(struct chat *c)
{
	struct worker *w = c->c_w;
	const struct request_io *io = c->c_io;
	struct retry_verdict v;
	char detail[64];
	char line[CURL_ERROR_SIZE + 64];
	enum cp_err err;
	int attempts = w->w_cfg->max_attempts < w->w_cfg->nkeys
			       ? (int)w->w_cfg->max_attempts
			       : w->w_cfg->nkeys;

	if (chat_admit(c) != CP_OK || chat_read(c) != CP_OK)
		return;
	/* A client that already left gets no slot and no upstream request. */
	if (io->io_gone(io->io_ctx)) {
		chat_log_denied(c, 499, "client_left",
				"gone before a slot was reserved");
		return;
	}
	chat_client_limits(c);
	for (c->c_attempts_left = attempts - 1;; c->c_attempts_left--) {
		c->c_sreq.sr_attempt = attempts - 1 - c->c_attempts_left;
		if (chat_reserve(c) != CP_OK)
			return;
		err = chat_wait(c);
		c->c_slot.s_late_us =
			(mono_ns() - c->c_slot.s_deadline_ns) / 1000;
		if (err == CP_ERR_HUP) {
			/* Its slot can go to the next request, if still last. */
			sched_release(&w->w_sched, &c->c_slot);
			memset(&c->c_res, 0, sizeof(c->c_res));
			chat_log(c, 499, "client left while queued");
			return;
		}
		if (c->c_sreq.sr_attempt == 0)
			metrics_queue_wait(c->c_slot.s_deadline_ns +
					   c->c_slot.s_late_us * 1000 -
					   c->c_t0);
		err = chat_forward(c);
		metrics_upstream(c->c_slot.s_key, c->c_res.us_status,
				 c->c_res.us_ttfb_ms, c->c_slot.s_late_us);
		v = retry_decide(err, c->c_res.us_status, c->c_resp->r_started,
				 c->c_attempts_left);
		if (v.rv_action != RETRY_AGAIN)
			break;
		/* The next reservation must know what this answer said. */
		chat_settle(c, 0, c->c_res.us_status);
		snprintf(line, sizeof(line), "%s; retrying on another key",
			 attempt_detail(c, detail, sizeof(detail)));
		chat_log(c, c->c_res.us_status ? (int)c->c_res.us_status : 502,
			 line);
	}
	chat_finish(c, &v);
	if (!c->c_held)
		metrics_tokens(c->c_slot.s_key, c->c_req.rb_model,
			       c->c_client.cl_name, c->c_scan.sc_usage.u_prompt,
			       c->c_scan.sc_usage.u_completion);
	/* After the client has its last byte: the round trip delays nobody. */
	chat_settle(c, 0, c->c_res.us_status);
}

void
chat_handle(struct worker *w, const struct request_io *io, struct resp *r,
	    enum reqbody_kind kind)
{
	struct chat c;

	memset(&c, 0, sizeof(c));
	c.c_kind = kind;
	c.c_name = kind == REQBODY_COMPLETION ? "completions" : "chat";
	c.c_url = kind == REQBODY_COMPLETION ? w->w_cfg->completions_url
					     : w->w_cfg->chat_url;
	c.c_w = w;
	c.c_io = io;
	c.c_resp = r;
	c.c_t0 = mono_ns();
	if (io->io_accepted_ns > 0 && io->io_accepted_ns <= c.c_t0) {
		c.c_thread_ns = c.c_t0 - io->io_accepted_ns;
		c.c_t0 = io->io_accepted_ns;
	}
	c.c_backlog_ms = backlog_ms(io, c.c_thread_ns);
	c.c_poll_why = SLOT_WHY_NONE;
	chat_request_id(io, c.c_rid);
	r->r_request_id = c.c_rid;
	usage_scan_init(&c.c_scan, 0);
	chat_run(&c);
	if (c.c_stream)
		metrics_stream(-1);
	if (c.c_sreq.sr_client != NULL)
		sched_client_done(&w->w_sched, &c.c_sreq);
	usage_scan_free(&c.c_scan);
}
