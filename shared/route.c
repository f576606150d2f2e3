/*
 * route.c - mount-point-relative routing.
 */
#include "route.h"

#include <string.h>

#define ALLOW_ROOT   "GET, HEAD, POST, OPTIONS"
#define ALLOW_CHAT   "POST, OPTIONS"
#define ALLOW_HEALTH "GET, HEAD, OPTIONS"
#define ALLOW_GET    ALLOW_HEALTH

static enum cp_err
copy_path(const char *p, size_t n, char *out, size_t outsz)
{
	size_t off = 0;

	if (n == 0 || p[0] != '/') {
		if (outsz < 2)
			return CP_ERR_TOOBIG;
		out[off++] = '/';
	}
	if (off + n >= outsz)
		return CP_ERR_TOOBIG;
	memcpy(out + off, p, n);
	out[off + n] = '\0';
	return CP_OK;
}

enum cp_err
route_path(const struct route_vars *v, char *out, size_t outsz)
{
	const char *uri;
	size_t ulen;
	size_t slen;

	if (v->rv_path_info != NULL && v->rv_path_info[0] != '\0')
		return copy_path(v->rv_path_info, strlen(v->rv_path_info), out,
				 outsz);
	if (v->rv_document_uri != NULL && v->rv_document_uri[0] != '\0') {
		uri = v->rv_document_uri;
		ulen = strlen(uri);
	} else if (v->rv_request_uri != NULL) {
		uri = v->rv_request_uri;
		ulen = strcspn(uri, "?#");
	} else {
		uri = "/";
		ulen = 1;
	}
	slen = v->rv_script_name ? strlen(v->rv_script_name) : 0;
	/* Strip the mount point: "/cerebras" from "/cerebras/v1/...". */
	if (slen > 0 && slen < ulen && v->rv_script_name[slen - 1] != '/' &&
	    uri[slen] == '/' && memcmp(uri, v->rv_script_name, slen) == 0) {
		uri += slen;
		ulen -= slen;
	}
	return copy_path(uri, ulen, out, outsz);
}

/* Compares path with want, allowing one trailing '/'. */
static int
path_is(const char *path, const char *want)
{
	size_t n = strlen(want);

	if (strncmp(path, want, n) != 0)
		return 0;
	return path[n] == '\0' || (path[n] == '/' && path[n + 1] == '\0');
}

/* Maps GET and HEAD to r, anything else to 405 with Allow. */
static enum route
get_only(const char *method, enum route r, const char **allow)
{
	if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
		return r;
	*allow = ALLOW_GET;
	return ROUTE_NOT_ALLOWED;
}

const char *
route_model_id(const char *path, size_t *len)
{
	const char *id;
	size_t n;

	if (strncmp(path, "/v1/models/", 11) == 0)
		id = path + 11;
	else if (strncmp(path, "/models/", 8) == 0)
		id = path + 8;
	else
		return NULL;
	n = strlen(id);
	if (n > 0 && id[n - 1] == '/')
		n--;
	if (n == 0 || memchr(id, '/', n) != NULL)
		return NULL;
	*len = n;
	return id;
}

enum route
route_decide(const char *method, const char *path, const char **allow)
{
	size_t idlen;

	*allow = NULL;
	if (method == NULL)
		method = "";
	if (strcmp(method, "OPTIONS") == 0)
		return ROUTE_PREFLIGHT;
	if (strcmp(path, "/") == 0) {
		if (strcmp(method, "POST") == 0)
			return ROUTE_CHAT;
		if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
			return ROUTE_HEALTH;
		*allow = ALLOW_ROOT;
		return ROUTE_NOT_ALLOWED;
	}
	/* A liveness check: needs no Redis and no Cerebras, as GET /. */
	if (strcmp(path, "/healthz") == 0)
		return get_only(method, ROUTE_HEALTH, allow);
	/* Readiness: the scheduler usable and a key usable now. */
	if (strcmp(path, "/readyz") == 0)
		return get_only(method, ROUTE_READY, allow);
	if (strcmp(path, "/metrics") == 0)
		return get_only(method, ROUTE_METRICS, allow);
	/* As for chat, also without "/v1" (an SDK based at the root). */
	if (path_is(path, "/v1/models") || path_is(path, "/models"))
		return get_only(method, ROUTE_MODELS, allow);
	if (route_model_id(path, &idlen) != NULL)
		return get_only(method, ROUTE_MODEL, allow);
	if (path_is(path, "/v1/completions") || path_is(path, "/completions")) {
		if (strcmp(method, "POST") == 0)
			return ROUTE_COMPLETIONS;
		*allow = ALLOW_CHAT;
		return ROUTE_NOT_ALLOWED;
	}
	/*
	 * "/chat/completions" too: an OpenAI SDK whose base URL is the
	 * proxy's root (no "/v1") calls that path.
	 */
	if (path_is(path, "/v1/chat/completions") ||
	    path_is(path, "/chat/completions")) {
		if (strcmp(method, "POST") == 0)
			return ROUTE_CHAT;
		*allow = ALLOW_CHAT;
		return ROUTE_NOT_ALLOWED;
	}
	return ROUTE_NOT_FOUND;
}
