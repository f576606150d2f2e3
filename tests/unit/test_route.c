/*
 * test_route.c - route_path (mount point from the CGI variables) and
 * route_decide (method + path -> handler).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "route.h"

#include <string.h>

#include "unit.h"

#define CHAT "/v1/chat/completions"

/* route_path */

struct path_case {
	const char *script_name;
	const char *path_info;
	const char *document_uri;
	const char *request_uri;
	const char *want;
};

static const struct path_case path_cases[] = {
	/* nginx with our fastcgi_split_path_info at "/" */
	{"", CHAT, CHAT, CHAT, CHAT},
	{"", CHAT, NULL, NULL, CHAT},
	/* nginx split under a prefix */
	{"/cerebras", CHAT, "/cerebras" CHAT, "/cerebras" CHAT, CHAT},
	{"/cerebras", CHAT, NULL, NULL, CHAT},
	/* Apache ScriptAlias /cerebras: request for "/cerebras/" */
	{"/cerebras", "/", NULL, "/cerebras/", "/"},
	{"/cerebras", "/", NULL, NULL, "/"},
	/* PATH_INFO without a leading '/' still yields one */
	{"", "v1/models", NULL, NULL, "/v1/models"},
	/* nginx stock fastcgi_params: SCRIPT_NAME is the whole path */
	{CHAT, NULL, CHAT, CHAT, CHAT},
	{"/", NULL, "/", "/", "/"},
	/* prefix mount without a split: strip SCRIPT_NAME */
	{"/cerebras", NULL, "/cerebras" CHAT, "/cerebras" CHAT, CHAT},
	{"/cerebras", NULL, "/cerebras/", "/cerebras/", "/"},
	{"/a/b", NULL, "/a/b/c", NULL, "/c"},
	/* not at a segment boundary: nothing stripped */
	{"/cere", NULL, "/cerebras/x", "/cerebras/x", "/cerebras/x"},
	{"/cere", NULL, "/cerebras", NULL, "/cerebras"},
	/* SCRIPT_NAME that is not a prefix at all */
	{"/other", NULL, "/cerebras/x", NULL, "/cerebras/x"},
	/* only REQUEST_URI: its query (and fragment) is not part of the path */
	{NULL, NULL, NULL, CHAT "?x=1", CHAT},
	{NULL, NULL, NULL, CHAT "#frag", CHAT},
	{NULL, NULL, NULL, "/?a=b", "/"},
	{NULL, NULL, NULL, "?a=b", "/"},
	{NULL, NULL, NULL, "", "/"},
	{"/cerebras", NULL, NULL, "/cerebras" CHAT "?stream=1", CHAT},
	/* DOCUMENT_URI wins over REQUEST_URI */
	{NULL, NULL, "/from-doc", "/from-req?x", "/from-doc"},
	/* empty DOCUMENT_URI falls through to REQUEST_URI */
	{NULL, NULL, "", "/from-req?x", "/from-req"},
	/* everything NULL */
	{NULL, NULL, NULL, NULL, "/"},
	{"", "", "", NULL, "/"},
	/* empty PATH_INFO falls through */
	{"/cerebras", "", "/cerebras" CHAT, NULL, CHAT},
	{"", "", NULL, CHAT "?x", CHAT},
	{CHAT, "", CHAT, CHAT, CHAT},
};

static void
test_route_path(void **state)
{
	char out[256];
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(path_cases); i++) {
		const struct path_case *t = &path_cases[i];
		struct route_vars v;
		enum cp_err ret;

		v.rv_script_name = t->script_name;
		v.rv_path_info = t->path_info;
		v.rv_document_uri = t->document_uri;
		v.rv_request_uri = t->request_uri;
		memset(out, 'Z', sizeof(out));
		ret = route_path(&v, out, sizeof(out));
		if (ret != CP_OK || strcmp(out, t->want) != 0)
			fail_msg("row %zu {%s, %s, %s, %s}: ret %d, "
				 "got \"%.*s\", want \"%s\"",
				 i, nz(t->script_name), nz(t->path_info),
				 nz(t->document_uri), nz(t->request_uri),
				 (int)ret, ret == CP_OK ? 255 : 0, out,
				 t->want);
	}
}

struct path_size_case {
	const char *path_info;
	const char *request_uri;
	size_t outsz;
	enum cp_err ret;
	const char *want;
};

static const struct path_size_case path_size_cases[] = {
	{CHAT, NULL, sizeof(CHAT), CP_OK, CHAT},
	{CHAT, NULL, sizeof(CHAT) - 1, CP_ERR_TOOBIG, NULL},
	{CHAT, NULL, 5, CP_ERR_TOOBIG, NULL},
	{CHAT, NULL, 1, CP_ERR_TOOBIG, NULL},
	{CHAT, NULL, 0, CP_ERR_TOOBIG, NULL},
	/* the '/' added in front counts too */
	{"v1", NULL, 4, CP_OK, "/v1"},
	{"v1", NULL, 3, CP_ERR_TOOBIG, NULL},
	/* the fallback "/" */
	{NULL, NULL, 2, CP_OK, "/"},
	{NULL, NULL, 1, CP_ERR_TOOBIG, NULL},
	{NULL, NULL, 0, CP_ERR_TOOBIG, NULL},
	{NULL, "?q", 2, CP_OK, "/"},
	{NULL, "?q", 1, CP_ERR_TOOBIG, NULL},
	{NULL, CHAT "?a=1", sizeof(CHAT), CP_OK, CHAT},
	{NULL, CHAT "?a=1", sizeof(CHAT) - 1, CP_ERR_TOOBIG, NULL},
};

static void
test_route_path_small_buffer(void **state)
{
	char out[64];
	size_t i;
	size_t j;

	(void)state;
	for (i = 0; i < NELEM(path_size_cases); i++) {
		const struct path_size_case *t = &path_size_cases[i];
		struct route_vars v = {NULL, NULL, NULL, NULL};
		enum cp_err ret;

		v.rv_path_info = t->path_info;
		v.rv_request_uri = t->request_uri;
		memset(out, 'Z', sizeof(out));
		ret = route_path(&v, out, t->outsz);
		if (ret != t->ret)
			fail_msg("row %zu (outsz %zu): ret %d, want %d", i,
				 t->outsz, (int)ret, (int)t->ret);
		if (ret == CP_OK && strcmp(out, t->want) != 0)
			fail_msg("row %zu: got \"%s\", want \"%s\"", i, out,
				 t->want);
		for (j = t->outsz; j < sizeof(out); j++)
			if (out[j] != 'Z')
				fail_msg("row %zu: wrote byte %zu beyond outsz "
					 "%zu",
					 i, j, t->outsz);
	}
}

/* route_decide */

#define ALLOW_ROOT   "GET, HEAD, POST, OPTIONS"
#define ALLOW_CHAT   "POST, OPTIONS"
#define ALLOW_HEALTH "GET, HEAD, OPTIONS"

struct decide_case {
	const char *method;
	const char *path;
	enum route want;
	const char *allow; /* for ROUTE_NOT_ALLOWED, NULL otherwise */
};

static const struct decide_case decide_cases[] = {
	{"POST", "/", ROUTE_CHAT, NULL},
	{"POST", CHAT, ROUTE_CHAT, NULL},
	{"POST", CHAT "/", ROUTE_CHAT, NULL},
	{"POST", "/chat/completions", ROUTE_CHAT, NULL},
	{"POST", "/chat/completions/", ROUTE_CHAT, NULL},
	{"GET", "/", ROUTE_HEALTH, NULL},
	{"HEAD", "/", ROUTE_HEALTH, NULL},
	{"GET", "/healthz", ROUTE_HEALTH, NULL},
	{"HEAD", "/healthz", ROUTE_HEALTH, NULL},
	{"OPTIONS", "/healthz", ROUTE_PREFLIGHT, NULL},
	{"POST", "/healthz", ROUTE_NOT_ALLOWED, ALLOW_HEALTH},
	{"GET", "/healthz/", ROUTE_NOT_FOUND, NULL},
	{"GET", "/v1/healthz", ROUTE_NOT_FOUND, NULL},
	{"OPTIONS", "/", ROUTE_PREFLIGHT, NULL},
	{"OPTIONS", CHAT, ROUTE_PREFLIGHT, NULL},
	{"OPTIONS", "/nope", ROUTE_PREFLIGHT, NULL},
	{"OPTIONS", "/v1/models", ROUTE_PREFLIGHT, NULL},
	{"PUT", "/", ROUTE_NOT_ALLOWED, ALLOW_ROOT},
	{"DELETE", "/", ROUTE_NOT_ALLOWED, ALLOW_ROOT},
	{"", "/", ROUTE_NOT_ALLOWED, ALLOW_ROOT},
	{NULL, "/", ROUTE_NOT_ALLOWED, ALLOW_ROOT},
	{"post", "/", ROUTE_NOT_ALLOWED, ALLOW_ROOT},
	{"get", "/", ROUTE_NOT_ALLOWED, ALLOW_ROOT},
	{"options", "/", ROUTE_NOT_ALLOWED, ALLOW_ROOT},
	{"POST ", "/", ROUTE_NOT_ALLOWED, ALLOW_ROOT},
	{"GET", CHAT, ROUTE_NOT_ALLOWED, ALLOW_CHAT},
	{"HEAD", CHAT, ROUTE_NOT_ALLOWED, ALLOW_CHAT},
	{"PUT", CHAT "/", ROUTE_NOT_ALLOWED, ALLOW_CHAT},
	{"GET", "/chat/completions", ROUTE_NOT_ALLOWED, ALLOW_CHAT},
	{NULL, CHAT, ROUTE_NOT_ALLOWED, ALLOW_CHAT},
	{"post", CHAT, ROUTE_NOT_ALLOWED, ALLOW_CHAT},
	{"POST", "/v1/models", ROUTE_NOT_ALLOWED, ALLOW_HEALTH},
	{"GET", "/v1/models", ROUTE_MODELS, NULL},
	{"HEAD", "/v1/models/", ROUTE_MODELS, NULL},
	{"GET", "/models", ROUTE_MODELS, NULL},
	{"GET", "/v1/models/gpt-oss-120b", ROUTE_MODEL, NULL},
	{"GET", "/models/llama3.1-8b/", ROUTE_MODEL, NULL},
	{"DELETE", "/v1/models/x", ROUTE_NOT_ALLOWED, ALLOW_HEALTH},
	{"GET", "/v1/models//", ROUTE_NOT_FOUND, NULL},
	{"GET", "/v1/models/a/b", ROUTE_NOT_FOUND, NULL},
	{"POST", "/v1/completions", ROUTE_COMPLETIONS, NULL},
	{"POST", "/completions/", ROUTE_COMPLETIONS, NULL},
	{"GET", "/v1/completions", ROUTE_NOT_ALLOWED, ALLOW_CHAT},
	{"GET", "/readyz", ROUTE_READY, NULL},
	{"POST", "/readyz", ROUTE_NOT_ALLOWED, ALLOW_HEALTH},
	{"GET", "/metrics", ROUTE_METRICS, NULL},
	{"HEAD", "/metrics", ROUTE_METRICS, NULL},
	{"GET", "/v1/metrics", ROUTE_NOT_FOUND, NULL},
	{"POST", "/v1/embeddings", ROUTE_NOT_FOUND, NULL},
	{"GET", "/nope", ROUTE_NOT_FOUND, NULL},
	{"POST", CHAT "X", ROUTE_NOT_FOUND, NULL},
	{"POST", CHAT "//", ROUTE_NOT_FOUND, NULL},
	{"POST", CHAT "/x", ROUTE_NOT_FOUND, NULL},
	{"POST", "/v1/chat/completion", ROUTE_NOT_FOUND, NULL},
	{"POST", "/V1/CHAT/COMPLETIONS", ROUTE_NOT_FOUND, NULL},
	{"POST", "/v1", ROUTE_NOT_FOUND, NULL},
	{"POST", "/v1/", ROUTE_NOT_FOUND, NULL},
	{"POST", "//", ROUTE_NOT_FOUND, NULL},
	{"POST", "/x" CHAT, ROUTE_NOT_FOUND, NULL},
	{"POST", "", ROUTE_NOT_FOUND, NULL},
	{NULL, "/nope", ROUTE_NOT_FOUND, NULL},
};

static const char *
route_name(enum route r)
{
	switch (r) {
	case ROUTE_CHAT: return "CHAT";
	case ROUTE_COMPLETIONS: return "COMPLETIONS";
	case ROUTE_MODELS: return "MODELS";
	case ROUTE_MODEL: return "MODEL";
	case ROUTE_READY: return "READY";
	case ROUTE_METRICS: return "METRICS";
	case ROUTE_HEALTH: return "HEALTH";
	case ROUTE_PREFLIGHT: return "PREFLIGHT";
	case ROUTE_NOT_ALLOWED: return "NOT_ALLOWED";
	case ROUTE_NOT_FOUND: return "NOT_FOUND";
	}
	return "?";
}

static void
test_route_decide(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(decide_cases); i++) {
		const struct decide_case *t = &decide_cases[i];
		const char *allow = "stale";
		enum route got;

		got = route_decide(t->method, t->path, &allow);
		if (got != t->want)
			fail_msg("row %zu %s %s: got %s, want %s", i,
				 nz(t->method), t->path, route_name(got),
				 route_name(t->want));
		if (t->allow == NULL) {
			if (allow != NULL)
				fail_msg("row %zu %s %s: allow \"%s\", want "
					 "NULL",
					 i, nz(t->method), t->path, allow);
		} else if (allow == NULL || strcmp(allow, t->allow) != 0) {
			fail_msg("row %zu %s %s: allow \"%s\", want \"%s\"", i,
				 nz(t->method), t->path, nz(allow), t->allow);
		}
	}
}

/* The two together, as the worker uses them. */
struct both_case {
	const char *script_name;
	const char *path_info;
	const char *document_uri;
	const char *request_uri;
	const char *method;
	enum route want;
};

static const struct both_case both_cases[] = {
	{"", CHAT, CHAT, CHAT, "POST", ROUTE_CHAT},
	{"/cerebras", CHAT, NULL, "/cerebras" CHAT, "POST", ROUTE_CHAT},
	{"/cerebras", "/", NULL, "/cerebras/", "GET", ROUTE_HEALTH},
	{CHAT, NULL, CHAT, CHAT, "POST", ROUTE_CHAT},
	{"/cerebras", NULL, "/cerebras" CHAT, NULL, "POST", ROUTE_CHAT},
	{"/cere", NULL, "/cerebras" CHAT, NULL, "POST", ROUTE_NOT_FOUND},
	{NULL, NULL, NULL, "/?x=1", "GET", ROUTE_HEALTH},
	{NULL, NULL, NULL, NULL, "HEAD", ROUTE_HEALTH},
};

static void
test_route_path_then_decide(void **state)
{
	char out[256];
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(both_cases); i++) {
		const struct both_case *t = &both_cases[i];
		struct route_vars v;
		const char *allow;
		enum route got;

		v.rv_script_name = t->script_name;
		v.rv_path_info = t->path_info;
		v.rv_document_uri = t->document_uri;
		v.rv_request_uri = t->request_uri;
		assert_int_equal(route_path(&v, out, sizeof(out)), CP_OK);
		got = route_decide(t->method, out, &allow);
		if (got != t->want)
			fail_msg("row %zu (path \"%s\"): got %s, want %s", i,
				 out, route_name(got), route_name(t->want));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_route_path),
		cmocka_unit_test(test_route_path_small_buffer),
		cmocka_unit_test(test_route_decide),
		cmocka_unit_test(test_route_path_then_decide),
	};

	return cmocka_run_group_tests_name("test_route", tests, NULL, NULL);
}
