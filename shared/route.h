/*
 * route.h - which handler a request goes to (pure, no I/O).
 *
 * The proxy may be mounted at "/" or under a prefix such as "/cerebras".
 * route_path() finds the path below the mount point from the CGI variables
 * the web server sets; route_decide() maps method + path to a route.
 */
#ifndef CP_ROUTE_H
#define CP_ROUTE_H

#include "util.h"

#include <stddef.h>

enum route {
	ROUTE_CHAT,	   /* forward to Cerebras */
	ROUTE_COMPLETIONS, /* the legacy text completions, as chat */
	ROUTE_MODELS,	   /* GET/HEAD /v1/models: the cached list */
	ROUTE_MODEL,	   /* GET/HEAD /v1/models/{id} (route_model_id) */
	ROUTE_HEALTH,	   /* GET/HEAD / and /healthz: 200 OK */
	ROUTE_READY,	   /* GET/HEAD /readyz: can a request be served? */
	ROUTE_METRICS,	   /* GET/HEAD /metrics: Prometheus text */
	ROUTE_PREFLIGHT,   /* OPTIONS on any path */
	ROUTE_NOT_ALLOWED, /* known path, other method: 405 + Allow */
	ROUTE_NOT_FOUND,   /* 404 */
};

struct route_vars {
	const char *rv_script_name;  /* SCRIPT_NAME: the mount point */
	const char *rv_path_info;    /* PATH_INFO: the path below it */
	const char *rv_document_uri; /* DOCUMENT_URI (nginx): decoded path */
	const char *rv_request_uri;  /* REQUEST_URI: raw path + query */
};

/*
 * Writes the path below the mount point to out (always starting with '/').
 *   1. PATH_INFO, when the server split the URI (nginx
 *      fastcgi_split_path_info, Apache ScriptAlias), is that path.
 *   2. Else the request path (DOCUMENT_URI, or REQUEST_URI without its
 *      query) with SCRIPT_NAME removed when SCRIPT_NAME is a proper prefix
 *      ending at a '/' boundary. When SCRIPT_NAME is the whole path (nginx's
 *      stock fastcgi_params) nothing is removed.
 * Returns CP_OK, or CP_ERR_TOOBIG if the path does not fit in out (which
 * then holds no string).
 */
enum cp_err route_path(const struct route_vars *v, char *out, size_t outsz);

/*
 * Maps a request to a route. For ROUTE_NOT_ALLOWED *allow is set to the
 * value of the Allow header.
 */
enum route route_decide(const char *method, const char *path,
			const char **allow);

/*
 * For a path route_decide() maps to ROUTE_MODEL: the model id in it (the
 * rest after "/models/", one trailing '/' not included: its length in
 * *len). NULL for any other path.
 */
const char *route_model_id(const char *path, size_t *len);

#endif
