/*
 * cors.h - Cross-Origin Resource Sharing headers (pure, no I/O).
 *
 * CORS_ALLOW_ORIGINS is "*" (the seed's behaviour: any page may call the
 * proxy) or a comma-separated list of exact origins, in which case a
 * matching Origin is echoed with "Vary: Origin" and others get no
 * Access-Control-Allow-Origin at all (the browser then blocks the read).
 */
#ifndef CP_CORS_H
#define CP_CORS_H

#include "util.h"

/*
 * Appends the CORS header lines ("Name: value\r\n") for an ordinary
 * response: Access-Control-Allow-Origin and, with it,
 * Access-Control-Expose-Headers ("*", then X-Request-Id, Retry-After,
 * X-Cache, Age and Cerebras' documented x-ratelimit-* by name, for
 * browsers without the wildcard). origin is the request's Origin header,
 * or NULL.
 */
enum cp_err cors_headers(struct buf *b, const char *allowed,
			 const char *origin);

/*
 * Appends the headers a preflight answer adds to the ordinary ones (which
 * resp_begin sends for every response): Allow-Methods, Allow-Headers (the requested headers echoed when they are
 * a plain list of header names), and Max-Age.
 */
enum cp_err cors_preflight_headers(struct buf *b, const char *request_headers);

/*
 * 1 if a request from origin may spend the keys: allowed is "*", origin
 * is NULL (no Origin header: not a browser's cross-origin request; such
 * clients are governed by tokens), or origin is on the list. A page on an
 * unlisted origin can still send a POST that needs no preflight
 * (text/plain, no-cors): it must be refused, not just left unreadable.
 */
int cors_origin_allowed(const char *allowed, const char *origin);

/* Returns 1 if s is a comma/space separated list of HTTP header names. */
int cors_header_list_ok(const char *s);

#endif
