/*
 * cors.c - CORS header lines.
 */
#include "cors.h"

#include <string.h>

#define CORS_METHODS	     "GET, HEAD, POST, OPTIONS"
#define CORS_MAX_AGE	     "86400"
#define CORS_MAX_HEADER_LIST 2048

/*
 * The response headers a page may read beyond the CORS-safelisted ones:
 * "*" for browsers that take it (no credentials are ever allowed here),
 * then by name for those that do not (Safari): the request id, how long
 * to wait after a 429 or 503, the models list's cache, and the limits
 * Cerebras documents on every answer.
 */
#define CORS_EXPOSE                                                            \
	"Access-Control-Expose-Headers: *, X-Request-Id, Retry-After, "        \
	"X-Cache, Age, x-ratelimit-limit-requests-day, "                       \
	"x-ratelimit-remaining-requests-day, x-ratelimit-reset-requests-day, " \
	"x-ratelimit-limit-tokens-minute, "                                    \
	"x-ratelimit-remaining-tokens-minute, "                                \
	"x-ratelimit-reset-tokens-minute\r\n"

int
cors_header_list_ok(const char *s)
{
	size_t n = 0;

	for (; s[n] != '\0'; n++) {
		if (n >= CORS_MAX_HEADER_LIST)
			return 0;
		if (!is_tchar(s[n]) && s[n] != ',' && s[n] != ' ' &&
		    s[n] != '\t')
			return 0;
	}
	return n > 0;
}

/* Is origin one of the comma-separated entries of list? */
static int
origin_listed(const char *list, const char *origin)
{
	size_t olen = strlen(origin);
	const char *p = list;
	const char *end;
	const char *s;

	while (*p != '\0') {
		end = p + strcspn(p, ",");
		s = p;
		while (s < end && (*s == ' ' || *s == '\t'))
			s++;
		while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if ((size_t)(end - s) == olen && memcmp(s, origin, olen) == 0)
			return 1;
		p = s + strcspn(s, ",");
		if (*p == ',')
			p++;
	}
	return 0;
}

int
cors_origin_allowed(const char *allowed, const char *origin)
{
	return strcmp(allowed, "*") == 0 || origin == NULL ||
	       origin_listed(allowed, origin);
}

enum cp_err
cors_headers(struct buf *b, const char *allowed, const char *origin)
{
	enum cp_err err;

	if (strcmp(allowed, "*") == 0)
		return buf_adds(
			b, "Access-Control-Allow-Origin: *\r\n" CORS_EXPOSE);
	err = buf_adds(b, "Vary: Origin\r\n");
	if (err)
		return err;
	/* An Origin is one line of visible ASCII (the web server saw to it). */
	if (origin == NULL || origin[0] == '\0' ||
	    !origin_listed(allowed, origin))
		return CP_OK;
	return buf_printf(b, "Access-Control-Allow-Origin: %s\r\n" CORS_EXPOSE,
			  origin);
}

enum cp_err
cors_preflight_headers(struct buf *b, const char *request_headers)
{
	enum cp_err err;

	err = buf_adds(b, "Access-Control-Allow-Methods: " CORS_METHODS "\r\n"
			  "Access-Control-Max-Age: " CORS_MAX_AGE "\r\n");
	if (err)
		return err;
	if (request_headers == NULL || request_headers[0] == '\0')
		return CP_OK;
	if (cors_header_list_ok(request_headers))
		err = buf_printf(b, "Access-Control-Allow-Headers: %s\r\n",
				 request_headers);
	else
		err = buf_adds(b, "Access-Control-Allow-Headers: "
				  "Content-Type, Authorization\r\n");
	if (err)
		return err;
	/* The answer depends on the request header either way. */
	return buf_adds(b, "Vary: Access-Control-Request-Headers\r\n");
}
