/*
 * fuzz_config.c - the configuration (shared/config.c): config_load() over
 * an environment built from the input, and config_parse_redis_url().
 *
 * Input: "NAME=value" lines, the environment config_load() sees through
 * its lookup function (the first line for a name wins; no getenv). An
 * accepted configuration is printed (--check-config) and freed; a refused
 * one must say why in one line. REDIS_URL's value (or, when no line has
 * an '=', the whole input) also goes to config_parse_redis_url(), whose
 * accepted address must be complete.
 */
#include "fuzz.h"

#include "config.h"

#define MAX_VARS 64

struct env {
	char *e_name[MAX_VARS];
	char *e_value[MAX_VARS];
	size_t e_n;
};

static const char *
lookup(const char *name, void *ctx)
{
	const struct env *e = ctx;
	size_t i;

	for (i = 0; i < e->e_n; i++)
		if (strcmp(e->e_name[i], name) == 0)
			return e->e_value[i];
	return NULL;
}

static void
check_err(const char *what, const char *err)
{
	if (err[0] == '\0')
		fuzz_fail("%s: refused without a reason", what);
	if (strchr(err, '\n') != NULL)
		fuzz_fail("%s: a reason of more than one line: \"%s\"", what,
			  err);
}

static void
redis_url(const char *url)
{
	struct redis_addr a;
	char err[256] = "";

	if (config_parse_redis_url(url, &a, err, sizeof(err)) != CP_OK) {
		check_err("config_parse_redis_url", err);
		if (strncmp(err, "REDIS_URL", 9) != 0)
			fuzz_fail("a reason that does not name REDIS_URL");
		return;
	}
	if (a.ra_kind == REDIS_TCP &&
	    (a.ra_host == NULL || a.ra_port < 1 || a.ra_port > 65535))
		fuzz_fail("a TCP address without host or port");
	if (a.ra_kind == REDIS_UNIX && a.ra_path == NULL)
		fuzz_fail("a socket address without a path");
	if (a.ra_db < 0)
		fuzz_fail("a negative db");
	config_free_redis_addr(&a);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static FILE *devnull;
	struct env e;
	struct config c;
	long long caps[CONFIG_NLIMITS];
	char err[256] = "";
	char *f[MAX_VARS];
	char *eq;
	const char *url;
	size_t n;
	size_t i;

	if (devnull == NULL)
		devnull = fopen("/dev/null", "w");
	if (devnull == NULL)
		abort();
	n = fuzz_fields(data, size, f, MAX_VARS);
	e.e_n = 0;
	for (i = 0; i < n; i++) {
		eq = strchr(f[i], '=');
		if (eq == NULL)
			continue;
		*eq = '\0';
		e.e_name[e.e_n] = f[i];
		e.e_value[e.e_n] = eq + 1;
		e.e_n++;
	}
	url = lookup("REDIS_URL", &e);
	if (url != NULL)
		redis_url(url);
	else if (e.e_n == 0)
		redis_url(n > 0 ? f[0] : "");

	memset(&c, 0x5a, sizeof(c));
	if (config_load(&c, lookup, &e, err, sizeof(err)) == CP_OK) {
		config_print(&c, devnull);
		config_declared(&c, "", caps);
		config_declared(&c, "llama3.1-8b", caps);
		if (c.nlimits > 0 && c.limits[0].dl_model != NULL)
			config_declared(&c, c.limits[0].dl_model, caps);
		config_free(&c);
	} else {
		check_err("config_load", err);
	}
	fuzz_free_fields(f, n);
	return 0;
}
