/*
 * headers.c - header filtering in both directions.
 */
#include "headers.h"

#include "util.h"

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

static int
is_tchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
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
