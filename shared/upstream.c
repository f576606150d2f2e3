/*
 * upstream.c - libcurl transfer with per-chunk relay to the client.
 */
#include "upstream.h"

#include "headers.h"
#include "log.h"
#include "tls.h"

#include <stdio.h>
#include <string.h>

#define UP_MAX_HEADERS	(64 * 1024)
#define UP_HUP_CHECK_NS (50 * 1000000LL)

/* State of one transfer, shared by the callbacks. */
struct xfer {
	struct upstream *x_up;
	const struct upstream_sink *x_sink;
	long x_status;
	int x_sse;	   /* Content-Type is text/event-stream */
	int x_begun;	   /* sk_begin was called for this answer */
	int x_hdr_toobig;  /* the header block went over the cap */
	int x_hup;	   /* client went away */
	int x_timeout;	   /* idle timeout fired */
	int64_t x_last_ns; /* last sign of life from upstream */
	int64_t x_hup_check_ns;
	int64_t x_first_ns; /* first response byte */
	enum cp_err x_err;  /* what the sink returned */
};

/*
 * What every forwarded request expects of the handle; the warm-up's HEAD
 * changes these and puts them back with this.
 */
static CURLcode
forward_defaults(CURL *c)
{
	CURLcode rc;

	rc = curl_easy_setopt(c, CURLOPT_POST, 1L);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_NOBODY, 0L);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 0L);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	return rc;
}

enum cp_err
upstream_init(struct upstream *u, const struct config *cfg, char *errbuf,
	      size_t errsz)
{
	CURL *c;
	CURLcode rc;
	enum cp_err err;

	memset(u, 0, sizeof(*u));
	u->up_cfg = cfg;
	buf_init(&u->up_hdrs, UP_MAX_HEADERS);
	c = curl_easy_init();
	if (c == NULL) {
		snprintf(errbuf, errsz, "libcurl: no handle (out of memory)");
		return CP_ERR_NOMEM;
	}
	u->up_curl = c;
	/* Options that stay the same for every request of this handle. */
	rc = curl_easy_setopt(c, CURLOPT_URL, cfg->chat_url);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_ERRORBUFFER, u->up_errbuf);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
				      cfg->connect_timeout_ms);
	if (!rc)
		rc = forward_defaults(c);
	if (rc) {
		snprintf(errbuf, errsz, "libcurl setup: %s",
			 curl_easy_strerror(rc));
		upstream_free(u);
		return CP_ERR_CURL_SETUP;
	}
	err = tls_store_apply(c, cfg, errbuf, errsz);
	if (err)
		upstream_free(u);
	return err;
}

void
upstream_free(struct upstream *u)
{
	if (u->up_curl != NULL)
		curl_easy_cleanup(u->up_curl);
	u->up_curl = NULL;
	buf_free(&u->up_hdrs);
}

static size_t
discard(char *ptr, size_t size, size_t nmemb, void *ctx)
{
	(void)ptr;
	(void)ctx;
	return size * nmemb;
}

#define UP_WARM_MAX_MS 3000L

void
upstream_warm(struct upstream *u)
{
	CURL *c = u->up_curl;
	CURLcode rc = CURLE_OK;
	CURLcode prc = CURLE_OK;
	long timeout = u->up_cfg->connect_timeout_ms;

	if (timeout > UP_WARM_MAX_MS)
		timeout = UP_WARM_MAX_MS;
	u->up_errbuf[0] = '\0';
	/* A HEAD without credentials: no key leaves, no slot is spent. */
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_NOPROGRESS, 1L);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, discard);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	if (!rc) {
		prc = curl_easy_perform(c);
		if (prc != CURLE_OK)
			log_warnx("upstream warm-up: %s (the first request "
				  "will connect)",
				  u->up_errbuf[0] ? u->up_errbuf
						  : curl_easy_strerror(prc));
	}
	rc = forward_defaults(c);
	if (rc)
		log_warnx("libcurl reset after warm-up failed: %s",
			  curl_easy_strerror(rc));
}

/* Hands the status and headers to the sink, once per answer. */
static enum cp_err
xfer_begin(struct xfer *x)
{
	const struct upstream_sink *k = x->x_sink;

	if (x->x_begun)
		return CP_OK;
	x->x_begun = 1;
	return k->sk_begin(k->sk_ctx, x->x_status, x->x_sse,
			   x->x_up->up_hdrs.b_p ? x->x_up->up_hdrs.b_p : "");
}

static size_t
on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * nmemb;
	size_t n = hdr_trim_eol(data, len);
	struct buf *h = &x->x_up->up_hdrs;
	const char *v;

	x->x_last_ns = mono_ns();
	if (x->x_first_ns == 0)
		x->x_first_ns = x->x_last_ns;
	if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		/* A new status line (also after 1xx): start over. */
		buf_reset(h);
		x->x_sse = 0;
		if (curl_easy_getinfo(x->x_up->up_curl, CURLINFO_RESPONSE_CODE,
				      &x->x_status) != CURLE_OK)
			x->x_status = 0;
		return len;
	}
	if (!hdr_forward_response(data, n))
		return len;
	if (has_prefix_ci(data, n, "content-type:")) {
		v = data + 13;
		while (*v == ' ' || *v == '\t')
			v++;
		x->x_sse = has_prefix_ci(v, n - (size_t)(v - data),
					 "text/event-stream");
	}
	if (buf_add(h, data, n) != CP_OK || buf_add(h, "\r\n", 2) != CP_OK) {
		x->x_hdr_toobig = 1;
		return 0; /* absurd header volume: abort */
	}
	return len;
}

static size_t
on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * nmemb;
	enum cp_err err;

	x->x_last_ns = mono_ns();
	err = xfer_begin(x);
	if (!err)
		err = x->x_sink->sk_body(x->x_sink->sk_ctx, data, len);
	if (err) {
		x->x_err = err;
		x->x_hup = err == CP_ERR_HUP;
		return 0; /* aborts the transfer */
	}
	return len;
}

/* Idle timeout and client hang-up, checked while libcurl waits. */
static int
on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
	    curl_off_t ulnow)
{
	struct xfer *x = arg;
	int64_t now = mono_ns();
	long limit;

	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	/* Before the first byte the model may be queued or thinking. */
	limit = x->x_first_ns == 0 ? x->x_up->up_cfg->first_byte_timeout_ms
				   : x->x_up->up_cfg->idle_timeout_ms;
	if (now - x->x_last_ns > (int64_t)limit * 1000000) {
		x->x_timeout = 1;
		return 1;
	}
	if (now - x->x_hup_check_ns >= UP_HUP_CHECK_NS) {
		x->x_hup_check_ns = now;
		if (x->x_sink->sk_gone(x->x_sink->sk_ctx)) {
			x->x_hup = 1;
			return 1;
		}
	}
	return 0;
}

/* Turns "Name: value\n" lines into a curl header list. */
static struct curl_slist *
build_headers(const struct upstream_req *req, struct buf *tmp)
{
	struct curl_slist *list = NULL;
	struct curl_slist *n;
	const char *p = req->ur_hdr_lines ? req->ur_hdr_lines : "";
	const char *e;

	buf_reset(tmp);
	if (buf_printf(tmp, "Authorization: Bearer %s", req->ur_key) != CP_OK)
		return NULL;
	list = curl_slist_append(NULL, tmp->b_p);
	/* Wipe the key from the scratch buffer. */
	explicit_bzero(tmp->b_p, tmp->b_len);
	buf_reset(tmp);
	if (list == NULL)
		return NULL;
	/* No "Expect: 100-continue" round trip for large bodies. */
	n = curl_slist_append(list, "Expect:");
	if (n == NULL)
		goto fail;
	list = n;
	while (*p != '\0') {
		e = strchr(p, '\n');
		if (e == NULL)
			e = p + strlen(p);
		buf_reset(tmp);
		if (buf_add(tmp, p, (size_t)(e - p)) != CP_OK)
			goto fail;
		n = curl_slist_append(list, tmp->b_p);
		if (n == NULL)
			goto fail;
		list = n;
		p = *e ? e + 1 : e;
	}
	buf_reset(tmp);
	return list;
fail:
	curl_slist_free_all(list);
	return NULL;
}

static int
is_timeout(CURLcode rc)
{
	return rc == CURLE_OPERATION_TIMEDOUT;
}

enum cp_err
upstream_forward(struct upstream *u, const struct upstream_req *req,
		 const struct upstream_sink *sink, struct upstream_res *res)
{
	CURL *c = u->up_curl;
	struct xfer x;
	struct curl_slist *hdrs;
	CURLcode rc = CURLE_OK;
	int64_t start = mono_ns();
	int performed = 0;

	memset(res, 0, sizeof(*res));
	memset(&x, 0, sizeof(x));
	x.x_up = u;
	x.x_sink = sink;
	x.x_last_ns = start;
	x.x_hup_check_ns = start;
	u->up_errbuf[0] = '\0';

	hdrs = build_headers(req, &u->up_hdrs);
	if (hdrs == NULL) {
		snprintf(res->us_detail, sizeof(res->us_detail),
			 "building request headers failed");
		return CP_ERR_NOMEM;
	}
	buf_reset(&u->up_hdrs);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->ur_body);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
				      (curl_off_t)req->ur_body_len);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_XFERINFODATA, &x);
	if (!rc) {
		performed = 1;
		rc = curl_easy_perform(c);
	}
	/* The list must outlive the transfer; detach it before freeing. */
	if (curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL) != CURLE_OK)
		log_warnx("libcurl: cannot detach header list");
	curl_slist_free_all(hdrs);

	res->us_status = x.x_status;
	res->us_sse = x.x_sse;
	if (curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &res->us_connects) !=
	    CURLE_OK)
		res->us_connects = -1;
	if (x.x_first_ns != 0)
		res->us_ttfb_ms = (double)(x.x_first_ns - start) / 1e6;

	if (!performed) {
		snprintf(res->us_detail, sizeof(res->us_detail), "libcurl: %s",
			 curl_easy_strerror(rc));
		return CP_ERR_CURL_SETUP;
	}
	if (x.x_hup || x.x_err == CP_ERR_HUP)
		return CP_ERR_HUP;
	if (x.x_err) {
		res->us_sink = x.x_err;
		snprintf(res->us_detail, sizeof(res->us_detail), "%s",
			 cp_strerror(x.x_err));
		return x.x_err;
	}
	if (x.x_hdr_toobig) {
		snprintf(res->us_detail, sizeof(res->us_detail),
			 "upstream headers over %d bytes", UP_MAX_HEADERS);
		return CP_ERR_UPSTREAM_TOOBIG;
	}
	if (x.x_timeout || is_timeout(rc)) {
		snprintf(res->us_detail, sizeof(res->us_detail),
			 "no data from upstream for %ld ms",
			 !x.x_timeout	     ? u->up_cfg->connect_timeout_ms
			 : x.x_first_ns == 0 ? u->up_cfg->first_byte_timeout_ms
					     : u->up_cfg->idle_timeout_ms);
		return CP_ERR_UPSTREAM_TIMEOUT;
	}
	if (rc != CURLE_OK) {
		snprintf(res->us_detail, sizeof(res->us_detail), "%s",
			 u->up_errbuf[0] ? u->up_errbuf
					 : curl_easy_strerror(rc));
		return CP_ERR_UPSTREAM;
	}
	if (x.x_status < 100) {
		snprintf(res->us_detail, sizeof(res->us_detail),
			 "no HTTP status from upstream");
		return CP_ERR_UPSTREAM;
	}
	/* An answer with no body (e.g. 204) still has its status. */
	return xfer_begin(&x);
}
