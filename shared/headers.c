/*
 * headers.c - header filtering in both directions.
 */
#include "headers.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Response headers never passed to the client (lower case). */
static const char *const drop_response[] = {
	/* hop-by-hop (RFC 9110 7.6.1) and framing */
	"connection",
	"keep-alive",
	"proxy-authenticate",
	"proxy-authorization",
	"proxy-connection",
	"te",
	"trailer",
	"trailers",
	"transfer-encoding",
	"upgrade",
	"content-length",
	/* set by the web server or by us */
	"date",
	"server",
	"status",
	"x-accel-buffering",
	"x-accel-redirect",
	"x-accel-limit-rate",
	"x-accel-charset",
	"x-accel-expires",
	"cache-control",
	"x-request-id", /* the proxy's own: the request's id */
	/* upstream cookies belong to the upstream, not to the browser */
	"set-cookie",
	"set-cookie2",
	/* transport details of the upstream hop */
	"alt-svc",
	"strict-transport-security",
	NULL,
};

const struct hdr_forward hdr_request_allowed[] = {
	{"HTTP_ACCEPT", "Accept"},
	{"HTTP_USER_AGENT", "User-Agent"},
	{"HTTP_X_REQUEST_ID", "X-Request-Id"},
	{"HTTP_X_CEREBRAS_3RD_PARTY_INTEGRATION",
	 "X-Cerebras-3rd-Party-Integration"},
	{NULL, NULL},
};

size_t
hdr_trim_eol(const char *line, size_t len)
{
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	return len;
}

int
hdr_forward_response(const char *line, size_t len)
{
	size_t name_len;
	size_t i;
	size_t j;

	len = hdr_trim_eol(line, len);
	if (len == 0)
		return 0;
	for (name_len = 0; name_len < len && line[name_len] != ':'; name_len++)
		if (!is_tchar(line[name_len]))
			return 0; /* status line, obs-fold, or junk */
	if (name_len == 0 || name_len == len)
		return 0;
	for (i = name_len + 1; i < len; i++) {
		unsigned char c = (unsigned char)line[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 0;
	}
	if (has_prefix_ci(line, name_len, "access-control-"))
		return 0;
	for (j = 0; drop_response[j] != NULL; j++)
		if (strlen(drop_response[j]) == name_len &&
		    has_prefix_ci(line, name_len, drop_response[j]))
			return 0;
	return 1;
}

int
hdr_value_ok(const char *v, size_t max)
{
	size_t i;

	for (i = 0; v[i] != '\0'; i++) {
		unsigned char c = (unsigned char)v[i];

		if (i >= max)
			return 0;
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 0;
	}
	return 1;
}

/* Seconds (possibly fractional, never negative) -> ms; -1 if not a number. */
static long
seconds_to_ms(const char *v, size_t n)
{
	char tmp[32];
	char *end;
	double d;

	while (n > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (n == 0 || n >= sizeof(tmp) || !(*v >= '0' && *v <= '9'))
		return -1;
	memcpy(tmp, v, n);
	tmp[n] = '\0';
	d = strtod(tmp, &end);
	if (*end != '\0' || d < 0 || d > 30 * 86400.0)
		return -1;
	return (long)(d * 1000.0 + 0.999);
}

/* Finds header name (case-insensitive) in block; sets *v, *n. */
static int
block_get(const char *block, const char *name, const char **v, size_t *n)
{
	size_t nl = strlen(name);
	const char *line = block;
	const char *eol;

	while (*line != '\0') {
		eol = strchr(line, '\n');
		if (eol == NULL)
			eol = line + strlen(line);
		if ((size_t)(eol - line) > nl && line[nl] == ':' &&
		    has_prefix_ci(line, nl, name)) {
			*v = line + nl + 1;
			*n = hdr_trim_eol(*v, (size_t)(eol - *v));
			return 1;
		}
		line = *eol ? eol + 1 : eol;
	}
	return 0;
}

int
hdr_has(const char *block, const char *name)
{
	const char *v;
	size_t n;

	return block_get(block, name, &v, &n);
}

const char *const hdr_limit_names[HDR_NLIMITS] = {
	"requests-minute", "tokens-minute", "requests-hour",
	"tokens-hour",	   "requests-day",  "tokens-day",
};

/* A count header (digits only, bounded); -1 if absent or not one. */
static long long
block_count(const char *block, const char *name)
{
	char tmp[24];
	const char *v;
	size_t n;
	size_t i;

	if (!block_get(block, name, &v, &n))
		return -1;
	while (n > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (n == 0 || n > 15)
		return -1;
	for (i = 0; i < n; i++)
		if (v[i] < '0' || v[i] > '9')
			return -1;
	memcpy(tmp, v, n);
	tmp[n] = '\0';
	return strtoll(tmp, NULL, 10);
}

void
hdr_limits(const char *block, struct hdr_limit out[HDR_NLIMITS])
{
	char name[64];
	const char *v;
	size_t n;
	size_t i;

	for (i = 0; i < HDR_NLIMITS; i++) {
		struct hdr_limit *l = &out[i];

		snprintf(name, sizeof(name), "x-ratelimit-limit-%s",
			 hdr_limit_names[i]);
		l->hl_limit = block_count(block, name);
		snprintf(name, sizeof(name), "x-ratelimit-remaining-%s",
			 hdr_limit_names[i]);
		l->hl_remaining = block_count(block, name);
		l->hl_known = l->hl_limit >= 0 && l->hl_remaining >= 0 &&
			      l->hl_remaining <= l->hl_limit;
		snprintf(name, sizeof(name), "x-ratelimit-reset-%s",
			 hdr_limit_names[i]);
		l->hl_reset_ms = block_get(block, name, &v, &n)
					 ? seconds_to_ms(v, n)
					 : -1;
	}
}

long
hdr_cooldown_ms(const char *block)
{
	struct hdr_limit l[HDR_NLIMITS];
	const char *v;
	size_t n;
	size_t i;
	long ms;
	long best = -1;

	if (block_get(block, "retry-after", &v, &n)) {
		ms = seconds_to_ms(v, n);
		if (ms >= 0)
			return ms;
	}
	hdr_limits(block, l);
	for (i = 0; i < HDR_NLIMITS; i++)
		if (l[i].hl_remaining == 0 && l[i].hl_reset_ms > best)
			best = l[i].hl_reset_ms; /* this one ran out */
	return best;
}
