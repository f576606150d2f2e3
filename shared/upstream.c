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
/*
 * The scratch copy of what is being masked: a header line (under
 * UP_MAX_HEADERS) or a body chunk (CURL_MAX_WRITE_SIZE, 16 KiB, plus a
 * held tail under CONFIG_MAX_KEY_LEN). Beyond it the transfer stops
 * rather than pass a chunk unscanned.
 */
#define UP_MAX_SCRATCH                                                         \
	(UP_MAX_HEADERS + CURL_MAX_WRITE_SIZE + CONFIG_MAX_KEY_LEN)
/*
 * A held tail still there when the answer ends is the start of a key,
 * never the whole of one; this many bytes of it or more are masked, fewer
 * (at most 7 bytes of a key, its public "csk-" and 3 more for Cerebras')
 * go out as sent, so a body that merely ends in "cs" is not mangled.
 */
#define UP_MASK_TAIL_MIN 8

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
	size_t x_scrubbed;  /* keys masked in this answer */
	int x_scrub_key;    /* the first one's index, -1 if none */
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
	buf_init(&u->up_scratch, UP_MAX_SCRATCH);
	buf_init(&u->up_hold, CONFIG_MAX_KEY_LEN);
	if (scrub_init(&u->up_scrub, (const char *const *)cfg->keys,
		       cfg->nkeys) != CP_OK) {
		snprintf(errbuf, errsz, "no memory for the key scrubber");
		upstream_free(u);
		return CP_ERR_NOMEM;
	}
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
	buf_free(&u->up_scratch);
	buf_free(&u->up_hold);
	scrub_free(&u->up_scrub);
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

/* Counts what was masked in this answer, for the warning at its end. */
static void
xfer_scrubbed(struct xfer *x, size_t n, int key)
{
	if (n > 0 && x->x_scrubbed == 0)
		x->x_scrub_key = key;
	x->x_scrubbed += n;
}

/*
 * data[0..len) with every key that starts before offset starts masked:
 * data itself when it holds none (the common case costs one scan, no
 * copy), else a masked copy in the scratch buffer; NULL if that copy
 * cannot be made. libcurl's buffer is never written to: its
 * documentation hands it over to be read (and data may already be the
 * scratch buffer, which is masked in place).
 */
static const char *
scrub_copy(struct xfer *x, const char *data, size_t len, size_t starts)
{
	struct upstream *u = x->x_up;
	struct buf *w = &u->up_scratch;
	int key;
	size_t n;

	if (scrub_find(&u->up_scrub, data, len, starts) < 0)
		return data;
	if (data != w->b_p) {
		buf_reset(w);
		if (buf_add(w, data, len) != CP_OK)
			return NULL;
	}
	n = scrub_mask(&u->up_scrub, w->b_p, len, starts, &key);
	xfer_scrubbed(x, n, key);
	return w->b_p;
}

static size_t
on_header(char *raw, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * nmemb;
	size_t n = hdr_trim_eol(raw, len);
	struct buf *h = &x->x_up->up_hdrs;
	const char *data = raw;
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
	/* A forwarded header that echoes a key carries it masked. */
	data = scrub_copy(x, raw, n, n);
	if (data == NULL) {
		x->x_hdr_toobig = 1;
		return 0;
	}
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

/*
 * Hands one chunk to the sink with every key masked. The bytes at its end
 * that could be the start of a key (scrub_hold: none for an SSE event,
 * which ends in "\n\n") wait in up_hold for the next chunk, so a key
 * split across two chunks is masked whole; body_flush sends them at the
 * end. The client receives the same bytes, cut differently.
 */
static enum cp_err
body_relay(struct xfer *x, const char *data, size_t len)
{
	struct upstream *u = x->x_up;
	const struct upstream_sink *k = x->x_sink;
	struct buf *w = &u->up_scratch;
	const char *p = data;
	size_t hold;

	if (u->up_scrub.sc_nsec == 0)
		return k->sk_body(k->sk_ctx, data, len);
	if (u->up_hold.b_len > 0) {
		buf_reset(w);
		if (buf_add(w, u->up_hold.b_p, u->up_hold.b_len) != CP_OK ||
		    buf_add(w, data, len) != CP_OK)
			return CP_ERR_UPSTREAM_TOOBIG;
		buf_reset(&u->up_hold);
		p = w->b_p;
		len = w->b_len;
	}
	/* Held bytes are decided with the next chunk: see scrub.h. */
	hold = scrub_hold(&u->up_scrub, p, len);
	p = scrub_copy(x, p, len, len - hold);
	if (p == NULL)
		return CP_ERR_UPSTREAM_TOOBIG;
	if (hold > 0) {
		if (buf_add(&u->up_hold, p + len - hold, hold) != CP_OK)
			return CP_ERR_UPSTREAM_TOOBIG;
		len -= hold;
	}
	if (len == 0)
		return CP_OK;
	return k->sk_body(k->sk_ctx, p, len);
}

/*
 * At the end of the body: the held tail is sent, its keys masked, or if
 * it has none but is the start of one, masked if it is long enough to
 * matter (UP_MASK_TAIL_MIN).
 */
static enum cp_err
body_flush(struct xfer *x)
{
	struct upstream *u = x->x_up;
	struct buf *t = &u->up_hold;
	enum cp_err err;
	size_t n;
	int key;

	if (t->b_len == 0)
		return CP_OK;
	n = scrub_mask(&u->up_scrub, t->b_p, t->b_len, t->b_len, &key);
	if (n == 0 && t->b_len >= UP_MASK_TAIL_MIN) {
		key = scrub_mask_tail(&u->up_scrub, t->b_p, t->b_len);
		n = key >= 0;
	}
	xfer_scrubbed(x, n, key);
	err = x->x_sink->sk_body(x->x_sink->sk_ctx, t->b_p, t->b_len);
	buf_reset(t);
	return err;
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
		err = body_relay(x, data, len);
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

/*
 * One transfer: a POST of req's body (upstream_forward), or with get set
 * a GET without one, after which the handle is set back to POST.
 */
static enum cp_err
transfer(struct upstream *u, const struct upstream_req *req,
	 const struct upstream_sink *sink, struct upstream_res *res, int get)
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
	x.x_scrub_key = -1;
	buf_reset(&u->up_hold);
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
	rc = curl_easy_setopt(c, CURLOPT_URL,
			      req->ur_url != NULL ? req->ur_url
						  : u->up_cfg->chat_url);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	if (!rc && get)
		rc = curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	if (!rc && !get)
		rc = curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->ur_body);
	if (!rc && !get)
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
	/*
	 * Back to POST: a chat request sets its body, which implies POST,
	 * but nothing may depend on that.
	 */
	if (get && forward_defaults(c) != CURLE_OK) {
		log_warnx("libcurl: cannot set the handle back to POST");
		performed = 0;
		rc = CURLE_FAILED_INIT;
	}
	/* Whatever the body was cut short by, its held tail goes too. */
	if (performed && !x.x_hup && !x.x_err && u->up_hold.b_len > 0) {
		x.x_err = body_flush(&x);
		x.x_hup = x.x_err == CP_ERR_HUP;
	}
	buf_reset(&u->up_hold);
	if (x.x_scrubbed > 0)
		log_warnx("upstream answer (status %ld) held an API key "
			  "%zu time(s), first key #%d (%s): masked before "
			  "it reached the client; something upstream echoes "
			  "the Authorization header",
			  x.x_status, x.x_scrubbed, x.x_scrub_key,
			  u->up_cfg->key_fps[x.x_scrub_key]);

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

enum cp_err
upstream_forward(struct upstream *u, const struct upstream_req *req,
		 const struct upstream_sink *sink, struct upstream_res *res)
{
	return transfer(u, req, sink, res, 0);
}

/* upstream_get's sink: the body into a capped buffer. */
struct get_sink {
	struct buf *gs_out;
	int (*gs_gone)(void *ctx);
	void *gs_ctx;
};

static enum cp_err
get_begin(void *ctx, long status, int sse, const char *hdrs)
{
	(void)ctx;
	(void)status;
	(void)sse;
	(void)hdrs;
	return CP_OK;
}

static enum cp_err
get_body(void *ctx, const char *data, size_t len)
{
	struct get_sink *g = ctx;

	/* Over the cap: the answer is not what was asked for. */
	if (buf_add(g->gs_out, data, len) != CP_OK)
		return CP_ERR_UPSTREAM_TOOBIG;
	return CP_OK;
}

static int
get_gone(void *ctx)
{
	struct get_sink *g = ctx;

	return g->gs_gone != NULL && g->gs_gone(g->gs_ctx);
}

enum cp_err
upstream_get(struct upstream *u, const struct upstream_req *req,
	     struct buf *out, int (*gone)(void *ctx), void *gone_ctx,
	     struct upstream_res *res)
{
	struct get_sink g = {out, gone, gone_ctx};
	struct upstream_sink sink = {get_begin, get_body, get_gone, &g};
	enum cp_err err;

	buf_reset(out);
	err = transfer(u, req, &sink, res, 1);
	/* A buffer allocated, if the answer was empty. */
	if (err == CP_OK && out->b_p == NULL)
		err = buf_add(out, "", 0);
	return err;
}
