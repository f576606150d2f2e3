/*
 * test_config.c - config_load from a table instead of the environment,
 * config_declared, config_print and config_parse_redis_url.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"

/* An environment: name/value rows ended by a {NULL, NULL} row. */
struct env {
	const char *name;
	const char *value;
};

#define MAX_ENV 8

static const char *
env_lookup(const char *name, void *ctx)
{
	const struct env *e = ctx;

	for (; e->name != NULL; e++)
		if (strcmp(e->name, name) == 0)
			return e->value;
	return NULL;
}

/*
 * Renders one field of c as text, so a table row can state what it
 * expects as {field, text} pairs.
 */
static const char *
field(const struct config *c, const char *name, char *out, size_t outsz)
{
	const struct redis_addr *a = &c->redis;
	long long caps[CONFIG_NLIMITS];
	size_t off = 0;
	int i;

	if (strcmp(name, "keys") == 0) {
		out[0] = '\0';
		for (i = 0; i < c->nkeys; i++)
			off += (size_t)snprintf(out + off, outsz - off, "%s%s",
						i ? "," : "", c->keys[i]);
	} else if (strcmp(name, "nkeys") == 0)
		snprintf(out, outsz, "%d", c->nkeys);
	else if (strcmp(name, "key_org") == 0) {
		out[0] = '\0';
		for (i = 0; i < c->nkeys; i++)
			off += (size_t)snprintf(out + off, outsz - off, "%s%d",
						i ? "," : "", c->key_org[i]);
	} else if (strcmp(name, "norgs") == 0)
		snprintf(out, outsz, "%d", c->norgs);
	else if (strcmp(name, "nlimits") == 0)
		snprintf(out, outsz, "%d", c->nlimits);
	else if (strncmp(name, "declared", 8) == 0) {
		/* "declared": every model; "declared:M": model M */
		config_declared(c, name[8] == ':' ? name + 9 : NULL, caps);
		out[0] = '\0';
		for (i = 0; i < CONFIG_NLIMITS; i++)
			off += (size_t)snprintf(out + off, outsz - off,
						"%s%lld", i ? "," : "",
						caps[i]);
	} else if (strcmp(name, "api_base") == 0)
		snprintf(out, outsz, "%s", nz(c->api_base));
	else if (strcmp(name, "chat_url") == 0)
		snprintf(out, outsz, "%s", nz(c->chat_url));
	else if (strcmp(name, "ca_file") == 0)
		snprintf(out, outsz, "%s", nz(c->ca_file));
	else if (strcmp(name, "redis_url") == 0)
		snprintf(out, outsz, "%s", nz(c->redis_url));
	else if (strcmp(name, "redis") == 0) {
		if (a->ra_kind == REDIS_TCP)
			snprintf(out, outsz, "tcp %s:%d db %d", nz(a->ra_host),
				 a->ra_port, a->ra_db);
		else
			snprintf(out, outsz, "unix %s db %d", nz(a->ra_path),
				 a->ra_db);
	} else if (strcmp(name, "redis_auth") == 0)
		snprintf(out, outsz, "%s/%s", nz(a->ra_user),
			 nz(a->ra_password));
	else if (strcmp(name, "redis_prefix") == 0)
		snprintf(out, outsz, "%s", nz(c->redis_prefix));
	else if (strcmp(name, "interval_ms") == 0)
		snprintf(out, outsz, "%ld", c->interval_ms);
	else if (strcmp(name, "redis_timeout_ms") == 0)
		snprintf(out, outsz, "%ld", c->redis_timeout_ms);
	else if (strcmp(name, "connect_timeout_ms") == 0)
		snprintf(out, outsz, "%ld", c->connect_timeout_ms);
	else if (strcmp(name, "idle_timeout_ms") == 0)
		snprintf(out, outsz, "%ld", c->idle_timeout_ms);
	else if (strcmp(name, "max_body_bytes") == 0)
		snprintf(out, outsz, "%ld", c->max_body_bytes);
	else if (strcmp(name, "cors_origins") == 0)
		snprintf(out, outsz, "%s", nz(c->cors_origins));
	else if (strcmp(name, "log_requests") == 0)
		snprintf(out, outsz, "%d", c->log_requests);
	else if (strcmp(name, "scope_per_key") == 0)
		snprintf(out, outsz, "%d", c->scope_per_key);
	else if (strcmp(name, "redis_enabled") == 0)
		snprintf(out, outsz, "%d", c->redis_enabled);
	else if (strcmp(name, "redis_fallback") == 0)
		snprintf(out, outsz, "%d", c->redis_fallback);
	else if (strcmp(name, "queue_max_wait_ms") == 0)
		snprintf(out, outsz, "%ld", c->queue_max_wait_ms);
	else if (strcmp(name, "max_attempts") == 0)
		snprintf(out, outsz, "%ld", c->max_attempts);
	else if (strcmp(name, "key_cooldown_ms") == 0)
		snprintf(out, outsz, "%ld", c->key_cooldown_ms);
	else if (strcmp(name, "key_disable_ms") == 0)
		snprintf(out, outsz, "%ld", c->key_disable_ms);
	else if (strcmp(name, "global_interval_ms") == 0)
		snprintf(out, outsz, "%ld", c->global_interval_ms);
	else
		fail_msg("test bug: unknown field %s", name);
	return out;
}

/* Nothing left to free: every owned pointer is NULL. */
static int
config_is_empty(const struct config *c)
{
	return c->keys == NULL && c->nkeys == 0 && c->key_fps == NULL &&
	       c->key_org == NULL && c->org_fps == NULL && c->norgs == 0 &&
	       c->limits == NULL && c->nlimits == 0 && c->api_base == NULL &&
	       c->chat_url == NULL && c->ca_file == NULL &&
	       c->redis_url == NULL && c->redis.ra_host == NULL &&
	       c->redis.ra_path == NULL && c->redis.ra_user == NULL &&
	       c->redis.ra_password == NULL && c->redis_prefix == NULL &&
	       c->cors_origins == NULL;
}

/* Good configurations: {environment, {field, expected text}...}. */

struct want {
	const char *field;
	const char *text;
};

struct good_case {
	const char *desc;
	struct env env[MAX_ENV];
	struct want want[16];
};

#define KEY                                                                    \
	{                                                                      \
		"CEREBRAS_API_KEYS", "sk-test"                                 \
	}
#define LOG_ROW(v, want)                                                       \
	{                                                                      \
		"log requests " v, {KEY, {"LOG_REQUESTS", v}},                 \
		{                                                              \
			{                                                      \
				"log_requests", want                           \
			}                                                      \
		}                                                              \
	}

static const struct good_case good_cases[] = {
	/* issue 5 settings: defaults, then each set */
	{"failover defaults",
	 {KEY},
	 {{"scope_per_key", "0"},
	  {"redis_enabled", "1"},
	  {"redis_fallback", "1"},
	  {"queue_max_wait_ms", "30000"},
	  {"max_attempts", "3"},
	  {"key_cooldown_ms", "60000"},
	  {"key_disable_ms", "3600000"},
	  {"global_interval_ms", "0"}}},
	{"per-key scope",
	 {KEY,
	  {"RATE_LIMIT_SCOPE", "key"},
	  {"RATE_LIMIT_GLOBAL_INTERVAL_MS", "50"},
	  {"QUEUE_MAX_WAIT_MS", "0"},
	  {"UPSTREAM_MAX_ATTEMPTS", "1"}},
	 {{"scope_per_key", "1"},
	  {"global_interval_ms", "50"},
	  {"queue_max_wait_ms", "0"},
	  {"max_attempts", "1"}}},
	{"no redis",
	 {KEY, {"REDIS_URL", "none"}, {"REDIS_FALLBACK", "refuse"}},
	 {{"redis_enabled", "0"}, {"redis_fallback", "0"}}},
	{"defaults",
	 {KEY},
	 {{"keys", "sk-test"},
	  {"nkeys", "1"},
	  {"api_base", "https://api.cerebras.ai/v1"},
	  {"chat_url", "https://api.cerebras.ai/v1/chat/completions"},
	  {"ca_file", "(null)"},
	  {"redis_url", "redis://127.0.0.1:6379/0"},
	  {"redis", "tcp 127.0.0.1:6379 db 0"},
	  {"redis_auth", "(null)/(null)"},
	  {"redis_prefix", "{cerebras-proxy}"},
	  {"interval_ms", "200"},
	  {"redis_timeout_ms", "1000"},
	  {"connect_timeout_ms", "10000"},
	  {"idle_timeout_ms", "120000"},
	  {"max_body_bytes", "16777216"},
	  {"cors_origins", "*"},
	  {"log_requests", "1"}}},
	{"keys with spaces and empty items",
	 {{"CEREBRAS_API_KEYS", " a , ,b,, c "}},
	 {{"nkeys", "3"}, {"keys", "a,b,c"}}},
	{"keys with tabs and newlines",
	 {{"CEREBRAS_API_KEYS", "\tk1\t,\nk2\r\n,"}},
	 {{"nkeys", "2"}, {"keys", "k1,k2"}}},
	{"single key",
	 {{"CEREBRAS_API_KEYS", "csk-0123456789abcdef"}},
	 {{"nkeys", "1"}, {"keys", "csk-0123456789abcdef"}}},
	{"leading and trailing commas",
	 {{"CEREBRAS_API_KEYS", ",,x,"}},
	 {{"nkeys", "1"}, {"keys", "x"}}},
	/* organisations: keys joined by '|' */
	{"one key per organisation",
	 {{"CEREBRAS_API_KEYS", "a,b,c"}},
	 {{"norgs", "3"}, {"key_org", "0,1,2"}}},
	{"two organisations",
	 {{"CEREBRAS_API_KEYS", "csk-a1|csk-a2,csk-b1"}},
	 {{"nkeys", "3"},
	  {"keys", "csk-a1,csk-a2,csk-b1"},
	  {"norgs", "2"},
	  {"key_org", "0,0,1"}}},
	{"organisations with spaces around keys and empty items",
	 {{"CEREBRAS_API_KEYS", " a , , b1 | b2 |\tb3 ,, c1|c2 ,"}},
	 {{"nkeys", "6"},
	  {"keys", "a,b1,b2,b3,c1,c2"},
	  {"norgs", "3"},
	  {"key_org", "0,1,1,1,2,2"}}},
	{"one organisation of several keys",
	 {{"CEREBRAS_API_KEYS", "x|y"}},
	 {{"nkeys", "2"}, {"norgs", "1"}, {"key_org", "0,0"}}},
	/* CEREBRAS_LIMITS */
	{"no limits declared",
	 {KEY},
	 {{"nlimits", "0"},
	  {"declared", "0,0,0,0,0,0"},
	  {"declared:gpt-oss-120b", "0,0,0,0,0,0"}}},
	{"empty limits",
	 {KEY, {"CEREBRAS_LIMITS", " ; ;; "}},
	 {{"nlimits", "0"}, {"declared:m", "0,0,0,0,0,0"}}},
	{"limits for every model and one model",
	 {KEY,
	  {"CEREBRAS_LIMITS",
	   "rpm=30,tpm=60000,rpd=14400;gpt-oss-120b:rpm=5,tpm=30000"}},
	 {{"nlimits", "2"},
	  {"declared", "30,60000,0,0,14400,0"},
	  {"declared:", "30,60000,0,0,14400,0"},
	  {"declared:gpt-oss-120b", "5,30000,0,0,14400,0"},
	  {"declared:GPT-OSS-120B", "30,60000,0,0,14400,0"},
	  {"declared:gpt-oss-120", "30,60000,0,0,14400,0"},
	  {"declared:other", "30,60000,0,0,14400,0"}}},
	{"every name, spaces, empty entries and pairs",
	 {KEY,
	  {"CEREBRAS_LIMITS",
	   " ; m1 : tpd = 6 , tph=4,, rpd=5 ;rpm=1,tpm=2,rph=3 ;; "}},
	 {{"nlimits", "2"},
	  {"declared", "1,2,3,0,0,0"},
	  {"declared:m1", "1,2,3,4,5,6"}}},
	{"model limits only",
	 {KEY, {"CEREBRAS_LIMITS", "a:rpm=1;b:tpm=2"}},
	 {{"nlimits", "2"},
	  {"declared", "0,0,0,0,0,0"},
	  {"declared:a", "1,0,0,0,0,0"},
	  {"declared:b", "0,2,0,0,0,0"},
	  {"declared:c", "0,0,0,0,0,0"}}},
	{"the all-models entry after a model's",
	 {KEY, {"CEREBRAS_LIMITS", "a:rpm=1;rpm=9,tpd=1000000000000"}},
	 {{"declared", "9,0,0,0,0,1000000000000"},
	  {"declared:a", "1,0,0,0,0,1000000000000"}}},
	{"model names: case, dots, 127 bytes",
	 {KEY,
	  {"CEREBRAS_LIMITS",
	   "Llama-3.3-70b:rpm=1;llama-3.3-70b:rpm=2;"
	   "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm"
	   "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm"
	   ":rpm=3"}},
	 {{"nlimits", "3"},
	  {"declared:Llama-3.3-70b", "1,0,0,0,0,0"},
	  {"declared:llama-3.3-70b", "2,0,0,0,0,0"},
	  {"declared:"
	   "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm"
	   "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm",
	   "3,0,0,0,0,0"}}},
	{"api base with trailing slashes",
	 {KEY, {"CEREBRAS_API_BASE", "https://example.test/v1///"}},
	 {{"api_base", "https://example.test/v1"},
	  {"chat_url", "https://example.test/v1/chat/completions"}}},
	{"api base host only, slash",
	 {KEY, {"CEREBRAS_API_BASE", "https://h/"}},
	 {{"api_base", "https://h"},
	  {"chat_url", "https://h/chat/completions"}}},
	{"api base over http with a port",
	 {KEY, {"CEREBRAS_API_BASE", "http://127.0.0.1:8443"}},
	 {{"api_base", "http://127.0.0.1:8443"},
	  {"chat_url", "http://127.0.0.1:8443/chat/completions"}}},
	{"interval 0",
	 {KEY, {"RATE_LIMIT_INTERVAL_MS", "0"}},
	 {{"interval_ms", "0"}}},
	{"interval maximum",
	 {KEY, {"RATE_LIMIT_INTERVAL_MS", "3600000"}},
	 {{"interval_ms", "3600000"}}},
	{"integer settings at their bounds",
	 {KEY,
	  {"REDIS_TIMEOUT_MS", "60000"},
	  {"UPSTREAM_CONNECT_TIMEOUT_MS", "1"},
	  {"UPSTREAM_IDLE_TIMEOUT_MS", "86400000"},
	  {"MAX_BODY_BYTES", "1024"}},
	 {{"redis_timeout_ms", "60000"},
	  {"connect_timeout_ms", "1"},
	  {"idle_timeout_ms", "86400000"},
	  {"max_body_bytes", "1024"}}},
	{"prefix without a hash tag gets one",
	 {KEY, {"REDIS_PREFIX", "myapp"}},
	 {{"redis_prefix", "{myapp}"}}},
	{"prefix with a hash tag is kept",
	 {KEY, {"REDIS_PREFIX", "x:{t}:y"}},
	 {{"redis_prefix", "x:{t}:y"}}},
	{"an empty hash tag is no hash tag",
	 {KEY, {"REDIS_PREFIX", "{}"}},
	 {{"redis_prefix", "{{}}"}}},
	{"an unclosed brace is no hash tag",
	 {KEY, {"REDIS_PREFIX", "a{b"}},
	 {{"redis_prefix", "{a{b}"}}},
	{"redis url tcp with db",
	 {KEY, {"REDIS_URL", "redis://h:1234/5"}},
	 {{"redis_url", "redis://h:1234/5"},
	  {"redis", "tcp h:1234 db 5"},
	  {"redis_auth", "(null)/(null)"}}},
	{"redis url with password",
	 {KEY, {"REDIS_URL", "redis://:pw@h:6380/0"}},
	 {{"redis", "tcp h:6380 db 0"}, {"redis_auth", "(null)/pw"}}},
	{"redis url unix socket",
	 {KEY, {"REDIS_URL", "unix:/tmp/r.sock?db=3"}},
	 {{"redis", "unix /tmp/r.sock db 3"}}},
	{"empty redis url is the default",
	 {KEY, {"REDIS_URL", ""}},
	 {{"redis_url", "redis://127.0.0.1:6379/0"},
	  {"redis", "tcp 127.0.0.1:6379 db 0"}}},
	{"empty CA file is the default store",
	 {KEY, {"CEREBRAS_CA_FILE", ""}},
	 {{"ca_file", "(null)"}}},
	{"origin list kept as given",
	 {KEY, {"CORS_ALLOW_ORIGINS", "https://a.example, https://b.example"}},
	 {{"cors_origins", "https://a.example, https://b.example"}}},
	LOG_ROW("0", "0"),
	LOG_ROW("no", "0"),
	LOG_ROW("off", "0"),
	LOG_ROW("false", "0"),
	LOG_ROW("1", "1"),
	LOG_ROW("yes", "1"),
	LOG_ROW("on", "1"),
	LOG_ROW("true", "1"),
};

static void
test_config_good(void **state)
{
	char err[256];
	char got[1024];
	size_t i;
	size_t j;

	(void)state;
	for (i = 0; i < NELEM(good_cases); i++) {
		const struct good_case *t = &good_cases[i];
		struct config c;

		err[0] = '\0';
		if (config_load(&c, env_lookup, (void *)t->env, err,
				sizeof(err)) != CP_OK)
			fail_msg("row %zu (%s): failed: %s", i, t->desc, err);
		for (j = 0; j < NELEM(t->want) && t->want[j].field != NULL;
		     j++) {
			field(&c, t->want[j].field, got, sizeof(got));
			if (strcmp(got, t->want[j].text) != 0)
				fail_msg("row %zu (%s): %s is \"%s\", want "
					 "\"%s\"",
					 i, t->desc, t->want[j].field, got,
					 t->want[j].text);
		}
		config_free(&c);
		assert_true(config_is_empty(&c));
	}
}

/* Bad configurations: the message names the variable, never a secret. */

struct bad_case {
	const char *var; /* the message starts with "var:" */
	struct env env[MAX_ENV];
	const char *sub; /* also in the message, or NULL */
};

#define SECRET_KEYS                                                            \
	{                                                                      \
		"CEREBRAS_API_KEYS", "sk-SECRET-1,sk-SECRET-2"                 \
	}

/* var set to value, with good keys. */
#define BAD(var, value, sub)                                                   \
	{                                                                      \
		var, {SECRET_KEYS, {var, value}}, sub                          \
	}
/* CEREBRAS_API_KEYS set to value. */
#define BAD_KEYS(value, sub)                                                   \
	{                                                                      \
		"CEREBRAS_API_KEYS", {{"CEREBRAS_API_KEYS", value}}, sub       \
	}

static const struct bad_case bad_cases[] = {
	BAD("RATE_LIMIT_SCOPE", "per-key", "global"),
	BAD("RATE_LIMIT_SCOPE", "", "key"),
	BAD("REDIS_FALLBACK", "open", "refuse"),
	BAD("UPSTREAM_MAX_ATTEMPTS", "0", "too small"),
	BAD("UPSTREAM_MAX_ATTEMPTS", "11", "too large"),
	BAD("QUEUE_MAX_WAIT_MS", "-1", "too small"),
	BAD("KEY_COOLDOWN_MS", "0", "too small"),
	{"CEREBRAS_API_KEYS", {{NULL, NULL}}, "not set"},
	BAD_KEYS("", "no key given"),
	BAD_KEYS(" , , ", "no key given"),
	BAD_KEYS(",", "no key given"),
	BAD_KEYS("sk-SECRET a", "#0"),
	BAD_KEYS("sk-SECRET-1,sk-SECRET\x01x", "#1"),
	BAD_KEYS("sk-SECRET\x7fx", NULL),
	BAD_KEYS("sk-SECRET\tx", NULL),
	BAD_KEYS("sk-SECRET-caf\xc3\xa9", NULL),
	/* an empty key in a '|' group */
	BAD_KEYS("sk-SECRET-1||sk-SECRET-2", "empty key at #1"),
	BAD_KEYS("sk-SECRET-1|", "empty key at #1"),
	BAD_KEYS("|sk-SECRET-1", "empty key at #0"),
	BAD_KEYS("sk-SECRET-0,|", "organisation #1 has an empty key at #1"),
	BAD_KEYS("sk-SECRET-0, sk-SECRET-1 | \t | sk-SECRET-2",
		 "organisation #1 has an empty key at #2"),
	BAD_KEYS("sk-SECRET-0,sk-SECRET-1|sk-SECRET 2", "key #2 contains"),
	/* CEREBRAS_LIMITS */
	BAD("CEREBRAS_LIMITS", "rps=1",
	    "unknown limit \"rps\" (expected rpm, tpm, rph, tph, rpd or tpd"),
	BAD("CEREBRAS_LIMITS", "RPM=1", "unknown limit \"RPM\""),
	BAD("CEREBRAS_LIMITS", "m:rpm=1,=2", "unknown limit \"\""),
	BAD("CEREBRAS_LIMITS", "rpm=abc",
	    "rpm for every model: not a number: \"abc\" (expected "
	    "1..1000000000000)"),
	BAD("CEREBRAS_LIMITS", "m:tpm=0", "tpm for \"m\": too small"),
	BAD("CEREBRAS_LIMITS", "rpm=-1", "too small"),
	BAD("CEREBRAS_LIMITS", "rpd=1000000000001", "too large"),
	BAD("CEREBRAS_LIMITS", "rpd=123456789012345678901234567890123",
	    "too large"),
	BAD("CEREBRAS_LIMITS", "rpm=", "empty"),
	BAD("CEREBRAS_LIMITS", "rpm=1.5", "not a number"),
	BAD("CEREBRAS_LIMITS", "rpm=1e3", "not a number"),
	BAD("CEREBRAS_LIMITS", "rpm=1 000", "not a number"),
	BAD("CEREBRAS_LIMITS", "rpm", "expected name=value, got \"rpm\""),
	BAD("CEREBRAS_LIMITS", "m:rpm=1,tpm", "expected name=value"),
	BAD("CEREBRAS_LIMITS", "rpm=1,tpm=2,rpm=3",
	    "rpm given twice for every model"),
	BAD("CEREBRAS_LIMITS", "m:rpm=1,rpm=1", "rpm given twice for \"m\""),
	BAD("CEREBRAS_LIMITS", "m:rpm=1;m:tpm=2", "model \"m\" given twice"),
	BAD("CEREBRAS_LIMITS", "m:rpm=1; m :tpm=2", "model \"m\" given twice"),
	BAD("CEREBRAS_LIMITS", "rpm=1;tpm=2", "every model"),
	BAD("CEREBRAS_LIMITS", ":rpm=1", "empty model name before ':'"),
	BAD("CEREBRAS_LIMITS", " \t :rpm=1", "empty model name"),
	BAD("CEREBRAS_LIMITS",
	    "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm"
	    "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm"
	    ":rpm=1",
	    "longer than 127 bytes"),
	BAD("CEREBRAS_LIMITS", "m\x01x:rpm=1",
	    "model name \"m\\x01x\" contains a control character"),
	BAD("CEREBRAS_LIMITS", "m\x7f:rpm=1", "control character"),
	BAD("CEREBRAS_LIMITS", "rpm=30,gpt-oss-120b:rpm=5",
	    "contains '=' (entries are separated by ';')"),
	BAD("CEREBRAS_LIMITS", "a,b:rpm=5", "contains ','"),
	BAD("CEREBRAS_LIMITS", "m:", "no name=value given for \"m\""),
	BAD("CEREBRAS_LIMITS", "m: , ", "no name=value given"),
	BAD("CEREBRAS_LIMITS", "m:rpm=1:2", "not a number"),
	BAD("CEREBRAS_LIMITS", "rpm=1234567890123456789012345678901234x",
	    "not a number"),
	BAD("CEREBRAS_LIMITS", "rpm=\x01", "\\x01"),
	BAD("CEREBRAS_API_BASE", "ftp://x", NULL),
	BAD("CEREBRAS_API_BASE", "https://", NULL),
	BAD("CEREBRAS_API_BASE", "https:///v1", NULL),
	BAD("CEREBRAS_API_BASE", "https://h/v1?x=1", NULL),
	BAD("CEREBRAS_API_BASE", "https://h/v1#frag", NULL),
	BAD("CEREBRAS_API_BASE", "https://h/v 1", NULL),
	BAD("CEREBRAS_API_BASE", "api.cerebras.ai", NULL),
	BAD("CEREBRAS_API_BASE", "", NULL),
	BAD("RATE_LIMIT_INTERVAL_MS", "abc",
	    "not a number: \"abc\" (expected 0..3600000)"),
	BAD("RATE_LIMIT_INTERVAL_MS", "-1", "too small"),
	BAD("RATE_LIMIT_INTERVAL_MS", "3600001", "too large"),
	BAD("RATE_LIMIT_INTERVAL_MS", "", "empty"),
	BAD("RATE_LIMIT_INTERVAL_MS", " 5", "not a number"),
	BAD("RATE_LIMIT_INTERVAL_MS", "5ms", "not a number"),
	BAD("REDIS_TIMEOUT_MS", "0", "too small"),
	BAD("UPSTREAM_CONNECT_TIMEOUT_MS", "600001", "too large"),
	BAD("UPSTREAM_IDLE_TIMEOUT_MS", "1e3", "not a number"),
	BAD("MAX_BODY_BYTES", "1023", "too small"),
	BAD("REDIS_URL", "http://x", NULL),
	BAD("REDIS_URL", "redis://h:0", "port"),
	BAD("REDIS_URL", "redis://h:99999", "port"),
	BAD("REDIS_URL", "redis://h:12ab", "port"),
	BAD("REDIS_URL", "unix:relative.sock", NULL),
	BAD("REDIS_URL", "redis://h/abc", "database"),
	BAD("REDIS_URL", "redis://:hunter2@h:0", "port"),
	BAD("REDIS_URL", "redis://user:hunter2@h/x", "database"),
	BAD("REDIS_URL", "unix:///tmp/r.sock?pw=hunter2", NULL),
	BAD("CEREBRAS_CA_FILE", "/nonexistent/cerebras-proxy-test/ca.pem",
	    "/nonexistent/cerebras-proxy-test/ca.pem"),
	BAD("REDIS_PREFIX", "", NULL),
	BAD("REDIS_PREFIX", "a b", NULL),
	BAD("WORKER_MAX_THREADS", "0", "1"),
	BAD("WORKER_MAX_THREADS", "5000", "4096"),
	BAD("WORKER_IDLE_TIMEOUT_MS", "10", "100"),
	BAD("LOG_REQUESTS", "maybe", NULL),
	BAD("LOG_REQUESTS", "", NULL),
	BAD("CORS_ALLOW_ORIGINS", "", NULL),
	BAD("CORS_ALLOW_ORIGINS", "https://a.example\r\nX: y", NULL),
	/* the first bad variable is the one reported */
	{"CEREBRAS_API_BASE",
	 {SECRET_KEYS,
	  {"CEREBRAS_API_BASE", "ftp://x"},
	  {"LOG_REQUESTS", "maybe"}},
	 NULL},
};

/* Text from the tables above that must never reach a message. */
static const char *const secrets[] = {"SECRET", "hunter2"};

static void
check_bad(size_t row, const char *var, const char *sub, const char *err)
{
	size_t n = strlen(var);
	size_t i;

	if (strncmp(err, var, n) != 0 || err[n] != ':')
		fail_msg("row %zu: message \"%s\" does not start with \"%s:\"",
			 row, err, var);
	if (sub != NULL && strstr(err, sub) == NULL)
		fail_msg("row %zu: message \"%s\" lacks \"%s\"", row, err, sub);
	for (i = 0; i < NELEM(secrets); i++)
		if (strstr(err, secrets[i]) != NULL)
			fail_msg("row %zu: message \"%s\" shows a secret", row,
				 err);
	if (strchr(err, '\n') != NULL)
		fail_msg("row %zu: message \"%s\" is not one line", row, err);
}

static void
test_config_bad(void **state)
{
	char err[256];
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(bad_cases); i++) {
		const struct bad_case *t = &bad_cases[i];
		struct config c;

		memset(err, 0, sizeof(err));
		if (config_load(&c, env_lookup, (void *)t->env, err,
				sizeof(err)) != CP_ERR_CONFIG) {
			config_free(&c);
			fail_msg("row %zu (%s): loaded", i, t->var);
		}
		check_bad(i, t->var, t->sub, err);
		/* Nothing to free after a failure (ASan checks for leaks). */
		if (!config_is_empty(&c))
			fail_msg("row %zu (%s): config not empty after failure",
				 i, t->var);
	}
}

/* A short err buffer truncates the message, still NUL-terminated. */
static void
test_config_bad_short_errbuf(void **state)
{
	static const struct env env[] = {
		{"CEREBRAS_API_KEYS", "k"},
		{"LOG_REQUESTS", "maybe"},
		{NULL, NULL},
	};
	char err[12];
	struct config c;

	(void)state;
	memset(err, 'Z', sizeof(err));
	assert_int_equal(
		config_load(&c, env_lookup, (void *)env, err, sizeof(err)),
		CP_ERR_CONFIG);
	assert_non_null(memchr(err, '\0', sizeof(err)));
	assert_string_equal(err, "LOG_REQUEST");
}

/* Key count and key length caps, with generated values. */
static void
test_config_key_caps(void **state)
{
	struct env env[2] = {{"CEREBRAS_API_KEYS", NULL}, {NULL, NULL}};
	char *v;
	size_t vsz = CONFIG_MAX_KEYS * 8 + CONFIG_MAX_KEY_LEN + 16;
	size_t off;
	char err[256];
	struct config c;
	int i;

	(void)state;
	v = malloc(vsz);
	assert_non_null(v);
	env[0].value = v;

	/* CONFIG_MAX_KEYS keys load; one more does not. */
	off = 0;
	for (i = 0; i < CONFIG_MAX_KEYS; i++)
		off += (size_t)snprintf(v + off, vsz - off, "%sk%d",
					i ? "," : "", i);
	assert_int_equal(config_load(&c, env_lookup, env, err, sizeof(err)),
			 CP_OK);
	assert_int_equal(c.nkeys, CONFIG_MAX_KEYS);
	assert_string_equal(c.keys[CONFIG_MAX_KEYS - 1], "k255");
	config_free(&c);
	snprintf(v + off, vsz - off, ",SECRETkey");
	assert_int_equal(config_load(&c, env_lookup, env, err, sizeof(err)),
			 CP_ERR_CONFIG);
	check_bad(0, "CEREBRAS_API_KEYS", NULL, err);
	assert_true(config_is_empty(&c));

	/* A key of CONFIG_MAX_KEY_LEN characters loads; one more does not. */
	memcpy(v, "SECRET", 6);
	memset(v + 6, 'x', CONFIG_MAX_KEY_LEN - 6);
	v[CONFIG_MAX_KEY_LEN] = '\0';
	assert_int_equal(config_load(&c, env_lookup, env, err, sizeof(err)),
			 CP_OK);
	assert_int_equal(c.nkeys, 1);
	assert_int_equal(strlen(c.keys[0]), CONFIG_MAX_KEY_LEN);
	config_free(&c);
	v[CONFIG_MAX_KEY_LEN] = 'x';
	v[CONFIG_MAX_KEY_LEN + 1] = '\0';
	assert_int_equal(config_load(&c, env_lookup, env, err, sizeof(err)),
			 CP_ERR_CONFIG);
	check_bad(1, "CEREBRAS_API_KEYS", NULL, err);
	assert_true(config_is_empty(&c));
	free(v);
}

/* A readable CA file is kept. */
static void
test_config_ca_file(void **state)
{
	char path[] = "/tmp/test_config_ca.XXXXXX";
	struct env env[] = {
		{"CEREBRAS_API_KEYS", "k"},
		{"CEREBRAS_CA_FILE", path},
		{NULL, NULL},
	};
	char err[256];
	struct config c;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(config_load(&c, env_lookup, env, err, sizeof(err)),
			 CP_OK);
	assert_non_null(c.ca_file);
	assert_string_equal(c.ca_file, path);
	config_free(&c);
	unlink(path);
}

/* --check-config output shows fingerprints, never keys or passwords. */
static void
test_config_print_masks_secrets(void **state)
{
	static const struct env envs[][3] = {
		{{"CEREBRAS_API_KEYS", "sk-SECRET-1,sk-SECRET-2"},
		 {"REDIS_URL", "redis://user:hunter2@h:6380/1"},
		 {NULL, NULL}},
		{{"CEREBRAS_API_KEYS", "sk-SECRET-1"},
		 {"REDIS_URL", "redis://:hunter2@[::1]:7000/2"},
		 {NULL, NULL}},
		{{"CEREBRAS_API_KEYS", "sk-SECRET-1"},
		 {"REDIS_URL", "unix:///tmp/r.sock?db=3"},
		 {NULL, NULL}},
	};
	char err[256];
	struct config c;
	char *out;
	size_t outlen;
	FILE *fp;
	size_t i;
	size_t j;

	(void)state;
	for (i = 0; i < NELEM(envs); i++) {
		assert_int_equal(config_load(&c, env_lookup, (void *)envs[i],
					     err, sizeof(err)),
				 CP_OK);
		out = NULL;
		fp = open_memstream(&out, &outlen);
		assert_non_null(fp);
		config_print(&c, fp);
		assert_int_equal(fclose(fp), 0);
		assert_non_null(strstr(out, "CEREBRAS_API_KEYS="));
		assert_non_null(strstr(out, "REDIS_URL="));
		for (j = 0; j < NELEM(secrets); j++)
			if (strstr(out, secrets[j]) != NULL)
				fail_msg("row %zu shows a secret:\n%s", i, out);
		free(out);
		config_free(&c);
	}
}

/* Renders config_print's output for c; the caller frees it. */
static char *
print_to_string(const struct config *c)
{
	char *out = NULL;
	size_t outlen;
	FILE *fp;

	fp = open_memstream(&out, &outlen);
	assert_non_null(fp);
	config_print(c, fp);
	assert_int_equal(fclose(fp), 0);
	assert_non_null(out);
	return out;
}

/*
 * --check-config prints every setting config_load reads, in README
 * order, one NAME=value line each: here every one set to a value other
 * than its default, so a setting read but not printed (or printed from the
 * wrong field) shows. LISTEN_PID/LISTEN_FDS come from systemd: not shown.
 */
static void
test_config_print_every_setting(void **state)
{
	static const struct env env[] = {
		{"CEREBRAS_API_KEYS", "sk-SECRET-1, sk-SECRET-2"},
		{"CEREBRAS_LIMITS", "gpt-oss-120b:tpm=5; rpd=7 ,rpm=1"},
		{"CEREBRAS_API_BASE", "https://gw:pa55@example.test/v1/"},
		{"CEREBRAS_CA_FILE", "/dev/null"},
		{"REDIS_URL", "redis://user:hunter2@cache.example:6380/1"},
		{"REDIS_FALLBACK", "refuse"},
		{"REDIS_PREFIX", "p"},
		{"REDIS_TIMEOUT_MS", "2"},
		{"RATE_LIMIT_INTERVAL_MS", "3"},
		{"RATE_LIMIT_SCOPE", "key"},
		{"RATE_LIMIT_GLOBAL_INTERVAL_MS", "4"},
		{"QUEUE_MAX_WAIT_MS", "5"},
		{"UPSTREAM_MAX_ATTEMPTS", "6"},
		{"KEY_COOLDOWN_MS", "7"},
		{"KEY_DISABLE_MS", "8"},
		{"UPSTREAM_CONNECT_TIMEOUT_MS", "9"},
		{"UPSTREAM_FIRST_BYTE_TIMEOUT_MS", "10"},
		{"UPSTREAM_IDLE_TIMEOUT_MS", "11"},
		{"DEFAULT_MAX_COMPLETION_TOKENS", "99"},
		{"MAX_BODY_BYTES", "2048"},
		{"CORS_ALLOW_ORIGINS", "https://a.example"},
		{"PROXY_TOKENS", "cp-token-one-1, cp-token-two-2"},
		{"PROXY_TOKENS_FILE", "/dev/null"},
		{"CLIENT_RATE_LIMIT", "120/hour"},
		{"CLIENT_MAX_CONCURRENT", "3"},
		{"TRUSTED_PROXIES", " 10.0.0.0/8, ::1,192.0.2.1"},
		{"MODELS_CACHE_S", "17"},
		{"METRICS_ALLOW", "10.1.0.0/16"},
		{"LOG_REQUESTS", "no"},
		{"LOG_FORMAT", "json"},
		{"WORKER_THREADS", "12"},
		{"WORKER_MAX_THREADS", "14"},
		{"WORKER_IDLE_TIMEOUT_MS", "150"},
		{"DRAIN_TIMEOUT_MS", "13"},
		{"LISTEN_PID", "1"},
		{"LISTEN_FDS", "1"},
		{NULL, NULL},
	};
	static const char *const rest =
		"CEREBRAS_LIMITS=rpm=1,rpd=7;gpt-oss-120b:tpm=5\n"
		"CEREBRAS_API_BASE=https://***@example.test/v1\n"
		"CEREBRAS_CA_FILE=/dev/null\n"
		"REDIS_URL=redis://***@cache.example:6380/1\n"
		"REDIS_FALLBACK=refuse\n"
		"REDIS_PREFIX={p}\n"
		"REDIS_TIMEOUT_MS=2\n"
		"RATE_LIMIT_INTERVAL_MS=3\n"
		"RATE_LIMIT_SCOPE=key\n"
		"RATE_LIMIT_GLOBAL_INTERVAL_MS=4\n"
		"QUEUE_MAX_WAIT_MS=5\n"
		"UPSTREAM_MAX_ATTEMPTS=6\n"
		"KEY_COOLDOWN_MS=7\n"
		"KEY_DISABLE_MS=8\n"
		"UPSTREAM_CONNECT_TIMEOUT_MS=9\n"
		"UPSTREAM_FIRST_BYTE_TIMEOUT_MS=10\n"
		"UPSTREAM_IDLE_TIMEOUT_MS=11\n"
		"DEFAULT_MAX_COMPLETION_TOKENS=99\n"
		"MAX_BODY_BYTES=2048\n"
		"CORS_ALLOW_ORIGINS=https://a.example\n"
		"PROXY_TOKENS=2 tokens: token#0(%s) token#1(%s)\n"
		"PROXY_TOKENS_FILE=/dev/null\n"
		"CLIENT_RATE_LIMIT=120/hour\n"
		"CLIENT_MAX_CONCURRENT=3\n"
		"TRUSTED_PROXIES=10.0.0.0/8,::1/128,192.0.2.1/32\n"
		"MODELS_CACHE_S=17\n"
		"METRICS_ALLOW=10.1.0.0/16\n"
		"LOG_REQUESTS=0\n"
		"LOG_FORMAT=json\n"
		"WORKER_THREADS=12\n"
		"WORKER_MAX_THREADS=14\n"
		"WORKER_IDLE_TIMEOUT_MS=150\n"
		"DRAIN_TIMEOUT_MS=13\n";
	char fp0[9];
	char fp1[9];
	char tp0[9];
	char tp1[9];
	char tail[2048];
	char want[4096];
	char err[256];
	struct config c;
	char *out;

	(void)state;
	assert_int_equal(
		config_load(&c, env_lookup, (void *)env, err, sizeof(err)),
		CP_OK);
	assert_int_equal(c.listen_pid, 1);
	key_fingerprint("sk-SECRET-1", fp0);
	key_fingerprint("sk-SECRET-2", fp1);
	key_fingerprint("cp-token-one-1", tp0);
	key_fingerprint("cp-token-two-2", tp1);
	snprintf(tail, sizeof(tail), rest, tp0, tp1);
	snprintf(want, sizeof(want),
		 "CEREBRAS_API_KEYS=2 keys: #0(%s) #1(%s)\n%s", fp0, fp1, tail);
	out = print_to_string(&c);
	/* No secret in it. */
	assert_null(strstr(out, "cp-token"));
	assert_null(strstr(out, "pa55"));
	assert_string_equal(out, want);
	free(out);
	config_free(&c);
}

/* Lines of --check-config for the defaults and for each REDIS_URL form. */

struct print_case {
	struct env env[3];
	const char *lines[12]; /* each a whole line of the output */
};

static const struct print_case print_cases[] = {
	{{KEY},
	 {"CEREBRAS_LIMITS=(none: learned from Cerebras' answers)",
	  "CEREBRAS_CA_FILE=(libcurl default store)",
	  "REDIS_URL=redis://127.0.0.1:6379/0", "REDIS_FALLBACK=local",
	  "RATE_LIMIT_SCOPE=global", "METRICS_ALLOW=127.0.0.0/8,::1/128",
	  "LOG_REQUESTS=1", "LOG_FORMAT=text", "WORKER_THREADS=2",
	  "WORKER_MAX_THREADS=512", "WORKER_IDLE_TIMEOUT_MS=30000",
	  "DRAIN_TIMEOUT_MS=10000"}},
	/* the minimum wins over a lower maximum */
	{{KEY, {"WORKER_THREADS", "600"}},
	 {"WORKER_THREADS=600", "WORKER_MAX_THREADS=600"}},
	{{KEY, {"REDIS_URL", "none"}},
	 {"REDIS_URL=none (per-host scheduling only)"}},
	{{KEY, {"REDIS_URL", "unix:///tmp/r.sock?db=3"}},
	 {"REDIS_URL=unix:///tmp/r.sock?db=3"}},
	{{KEY, {"REDIS_URL", "redis://:hunter2@[::1]:7000/2"}},
	 {"REDIS_URL=redis://***@[::1]:7000/2"}},
	{{KEY, {"REDIS_URL", "redis://h"}}, {"REDIS_URL=redis://h:6379/0"}},
	/* declared limits, normalised */
	{{KEY, {"CEREBRAS_LIMITS", ""}},
	 {"CEREBRAS_LIMITS=(none: learned from Cerebras' answers)"}},
	{{KEY,
	  {"CEREBRAS_LIMITS",
	   "rpm=30,tpm=60000,rpd=14400;gpt-oss-120b:rpm=5,tpm=30000"}},
	 {"CEREBRAS_LIMITS=rpm=30,tpm=60000,rpd=14400;gpt-oss-120b:rpm=5,"
	  "tpm=30000"}},
	{{KEY,
	  {"CEREBRAS_LIMITS",
	   " a : tpd=6,rpm=1 ;; tph = 4 , rph=3 ; b:rpd=5,tpm=2 "}},
	 {"CEREBRAS_LIMITS=rph=3,tph=4;a:rpm=1,tpd=6;b:tpm=2,rpd=5"}},
	{{KEY, {"CEREBRAS_LIMITS", "m:rpm=1"}}, {"CEREBRAS_LIMITS=m:rpm=1"}},
};

/* Is line one whole line of text? */
static int
has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	const char *p = text;

	while (*p != '\0') {
		if (strncmp(p, line, n) == 0 && p[n] == '\n')
			return 1;
		p = strchr(p, '\n');
		if (p == NULL)
			return 0;
		p++;
	}
	return 0;
}

static void
test_config_print_lines(void **state)
{
	char err[256];
	struct config c;
	char *out;
	size_t i;
	size_t j;

	(void)state;
	for (i = 0; i < NELEM(print_cases); i++) {
		const struct print_case *t = &print_cases[i];

		assert_int_equal(config_load(&c, env_lookup, (void *)t->env,
					     err, sizeof(err)),
				 CP_OK);
		out = print_to_string(&c);
		for (j = 0; j < NELEM(t->lines) && t->lines[j] != NULL; j++)
			if (!has_line(out, t->lines[j]))
				fail_msg("row %zu: no line \"%s\" in:\n%s", i,
					 t->lines[j], out);
		assert_null(strstr(out, "LISTEN_"));
		assert_null(strstr(out, "hunter2"));
		free(out);
		config_free(&c);
	}
}

/*
 * Organisations: key_org, norgs, and each organisation's fingerprint, that
 * of its keys joined by '|' (a lone key's organisation: the key's own).
 */
static void
test_config_orgs(void **state)
{
	static const struct env env[] = {
		{"CEREBRAS_API_KEYS",
		 " csk-a1 | csk-a2 ,, csk-b1,csk-c1|csk-c2|csk-c3"},
		{NULL, NULL},
	};
	char fp[9];
	char err[256];
	struct config c;

	(void)state;
	assert_int_equal(
		config_load(&c, env_lookup, (void *)env, err, sizeof(err)),
		CP_OK);
	assert_int_equal(c.nkeys, 6);
	assert_int_equal(c.norgs, 3);
	assert_int_equal(c.key_org[0], 0);
	assert_int_equal(c.key_org[1], 0);
	assert_int_equal(c.key_org[2], 1);
	assert_int_equal(c.key_org[3], 2);
	assert_int_equal(c.key_org[5], 2);
	key_fingerprint("csk-a1|csk-a2", fp);
	assert_string_equal(c.org_fps[0], fp);
	key_fingerprint("csk-b1", fp);
	assert_string_equal(c.org_fps[1], fp);
	assert_string_equal(c.org_fps[1], c.key_fps[2]);
	key_fingerprint("csk-c1|csk-c2|csk-c3", fp);
	assert_string_equal(c.org_fps[2], fp);
	/* the key fingerprints are still each key's own */
	key_fingerprint("csk-a2", fp);
	assert_string_equal(c.key_fps[1], fp);
	config_free(&c);
	assert_true(config_is_empty(&c));
}

/*
 * --check-config with organisations: keys of one organisation joined by
 * '|'; with one key per organisation the format of before.
 */
static void
test_config_print_orgs(void **state)
{
	static const struct env env2[] = {
		{"CEREBRAS_API_KEYS", "sk-SECRET-1|sk-SECRET-2,sk-SECRET-3"},
		{NULL, NULL},
	};
	static const struct env env1[] = {
		{"CEREBRAS_API_KEYS", "sk-SECRET-1 | sk-SECRET-2"},
		{NULL, NULL},
	};
	static const struct env env3[] = {
		{"CEREBRAS_API_KEYS", "sk-SECRET-1,sk-SECRET-2|sk-SECRET-3"},
		{NULL, NULL},
	};
	char fp[3][9];
	char want[256];
	char err[256];
	struct config c;
	char *out;

	(void)state;
	key_fingerprint("sk-SECRET-1", fp[0]);
	key_fingerprint("sk-SECRET-2", fp[1]);
	key_fingerprint("sk-SECRET-3", fp[2]);

	assert_int_equal(
		config_load(&c, env_lookup, (void *)env2, err, sizeof(err)),
		CP_OK);
	out = print_to_string(&c);
	snprintf(want, sizeof(want),
		 "CEREBRAS_API_KEYS=3 keys, 2 organisations: #0(%s)|#1(%s) "
		 "#2(%s)",
		 fp[0], fp[1], fp[2]);
	if (!has_line(out, want))
		fail_msg("no line \"%s\" in:\n%s", want, out);
	assert_null(strstr(out, "SECRET"));
	free(out);
	config_free(&c);

	assert_int_equal(
		config_load(&c, env_lookup, (void *)env1, err, sizeof(err)),
		CP_OK);
	out = print_to_string(&c);
	snprintf(want, sizeof(want),
		 "CEREBRAS_API_KEYS=2 keys, 1 organisation: #0(%s)|#1(%s)",
		 fp[0], fp[1]);
	if (!has_line(out, want))
		fail_msg("no line \"%s\" in:\n%s", want, out);
	free(out);
	config_free(&c);

	assert_int_equal(
		config_load(&c, env_lookup, (void *)env3, err, sizeof(err)),
		CP_OK);
	out = print_to_string(&c);
	snprintf(want, sizeof(want),
		 "CEREBRAS_API_KEYS=3 keys, 2 organisations: #0(%s) "
		 "#1(%s)|#2(%s)",
		 fp[0], fp[1], fp[2]);
	if (!has_line(out, want))
		fail_msg("no line \"%s\" in:\n%s", want, out);
	free(out);
	config_free(&c);
}

/*
 * Caps with organisations: CONFIG_MAX_KEYS keys in one organisation load,
 * one more does not; at most 256 CEREBRAS_LIMITS entries.
 */
static void
test_config_org_and_limits_caps(void **state)
{
	struct env env[3] = {
		{"CEREBRAS_API_KEYS", NULL},
		{"CEREBRAS_LIMITS", NULL},
		{NULL, NULL},
	};
	size_t vsz = CONFIG_MAX_KEYS * 16 + 64;
	char *v;
	size_t off;
	char err[256];
	struct config c;
	int i;

	(void)state;
	v = malloc(vsz);
	assert_non_null(v);
	env[0].value = v;
	off = 0;
	for (i = 0; i < CONFIG_MAX_KEYS; i++)
		off += (size_t)snprintf(v + off, vsz - off, "%sk%d",
					i ? "|" : "", i);
	assert_int_equal(config_load(&c, env_lookup, env, err, sizeof(err)),
			 CP_OK);
	assert_int_equal(c.nkeys, CONFIG_MAX_KEYS);
	assert_int_equal(c.norgs, 1);
	assert_int_equal(c.key_org[CONFIG_MAX_KEYS - 1], 0);
	config_free(&c);
	snprintf(v + off, vsz - off, "|SECRETkey");
	assert_int_equal(config_load(&c, env_lookup, env, err, sizeof(err)),
			 CP_ERR_CONFIG);
	check_bad(0, "CEREBRAS_API_KEYS", "more than 256 keys", err);
	assert_true(config_is_empty(&c));

	/* 256 entries load (with empty ones between), 257 do not */
	env[0].value = "k";
	env[1].value = v;
	off = 0;
	for (i = 0; i < 256; i++)
		off += (size_t)snprintf(v + off, vsz - off, "m%d:rpm=%d;;", i,
					i + 1);
	assert_true(off < vsz);
	assert_int_equal(config_load(&c, env_lookup, env, err, sizeof(err)),
			 CP_OK);
	assert_int_equal(c.nlimits, 256);
	assert_int_equal(c.limits[255].dl_cap[0], 256);
	config_free(&c);
	snprintf(v + off, vsz - off, "rpm=1");
	assert_int_equal(config_load(&c, env_lookup, env, err, sizeof(err)),
			 CP_ERR_CONFIG);
	check_bad(1, "CEREBRAS_LIMITS", "more than 256 entries", err);
	assert_true(config_is_empty(&c));
	free(v);
}

/* config_parse_redis_url */

struct url_case {
	const char *url;
	enum cp_err ret;
	enum redis_kind kind;
	const char *host;
	int port;
	const char *path;
	const char *user;
	const char *password;
	int db;
};

static const struct url_case url_cases[] = {
	{"redis://h:1234/5", CP_OK, REDIS_TCP, "h", 1234, NULL, NULL, NULL, 5},
	{"redis://h", CP_OK, REDIS_TCP, "h", 6379, NULL, NULL, NULL, 0},
	{"redis://h/", CP_OK, REDIS_TCP, "h", 6379, NULL, NULL, NULL, 0},
	{"redis://127.0.0.1:6379/0", CP_OK, REDIS_TCP, "127.0.0.1", 6379, NULL,
	 NULL, NULL, 0},
	{"redis://h:65535/1000000", CP_OK, REDIS_TCP, "h", 65535, NULL, NULL,
	 NULL, 1000000},
	{"redis://:pw@h:6380/0", CP_OK, REDIS_TCP, "h", 6380, NULL, NULL, "pw",
	 0},
	{"redis://user:pw@h", CP_OK, REDIS_TCP, "h", 6379, NULL, "user", "pw",
	 0},
	{"redis://:p:w@h", CP_OK, REDIS_TCP, "h", 6379, NULL, NULL, "p:w", 0},
	{"redis://:p@w@h:1/2", CP_OK, REDIS_TCP, "h", 1, NULL, NULL, "p@w", 2},
	{"redis://[::1]:7000/2", CP_OK, REDIS_TCP, "::1", 7000, NULL, NULL,
	 NULL, 2},
	{"redis://[::1]", CP_OK, REDIS_TCP, "::1", 6379, NULL, NULL, NULL, 0},
	{"redis://:pw@[fe80::1]:6380", CP_OK, REDIS_TCP, "fe80::1", 6380, NULL,
	 NULL, "pw", 0},
	{"unix:///tmp/r.sock", CP_OK, REDIS_UNIX, NULL, 6379, "/tmp/r.sock",
	 NULL, NULL, 0},
	{"unix:/tmp/r.sock?db=3", CP_OK, REDIS_UNIX, NULL, 6379, "/tmp/r.sock",
	 NULL, NULL, 3},
	{"unix:///tmp/r.sock?db=15", CP_OK, REDIS_UNIX, NULL, 6379,
	 "/tmp/r.sock", NULL, NULL, 15},
	{"http://x", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL, 0},
	{"rediss://h", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL, 0},
	{"", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL, 0},
	{"redis://", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL, 0},
	{"redis:///0", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL, 0},
	{"redis://h:0", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL, 0},
	{"redis://h:99999", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL,
	 0},
	{"redis://h:12ab", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL,
	 0},
	{"redis://h:", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL, 0},
	{"redis://h:-1", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL,
	 0},
	{"redis://h:12345678901234567890", CP_ERR_CONFIG, REDIS_TCP, NULL, 0,
	 NULL, NULL, NULL, 0},
	{"redis://h/abc", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL,
	 0},
	{"redis://h/-1", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL,
	 0},
	{"redis://h/1000001", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL,
	 NULL, 0},
	{"redis://user@h", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL,
	 0},
	{"redis://:pw@", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL,
	 0},
	{"redis://[::1", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL,
	 0},
	{"redis://[::1]x", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL,
	 0},
	{"redis://[]:1", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL,
	 0},
	{"unix:relative.sock", CP_ERR_CONFIG, REDIS_UNIX, NULL, 0, NULL, NULL,
	 NULL, 0},
	{"unix://relative.sock", CP_ERR_CONFIG, REDIS_UNIX, NULL, 0, NULL, NULL,
	 NULL, 0},
	{"unix:", CP_ERR_CONFIG, REDIS_UNIX, NULL, 0, NULL, NULL, NULL, 0},
	{"unix:/tmp/r.sock?db=x", CP_ERR_CONFIG, REDIS_UNIX, NULL, 0, NULL,
	 NULL, NULL, 0},
	{"unix:/tmp/r.sock?x=1", CP_ERR_CONFIG, REDIS_UNIX, NULL, 0, NULL, NULL,
	 NULL, 0},
	/* percent-encoded credentials are decoded */
	{"redis://:p%40ss%2Fw%3a@h", CP_OK, REDIS_TCP, "h", 6379, NULL, NULL,
	 "p@ss/w:", 0},
	{"redis://us%65r:pw@h", CP_OK, REDIS_TCP, "h", 6379, NULL, "user", "pw",
	 0},
	{"redis://:p%4@h", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL,
	 0},
	{"redis://:p%zz@h", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL,
	 0},
	{"redis://:p%00@h", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL,
	 0},
	/* a query or junk in the host is refused (it could hide a password) */
	{"redis://cache.example?password=hunter2", CP_ERR_CONFIG, REDIS_TCP,
	 NULL, 0, NULL, NULL, NULL, 0},
	{"redis://h#frag", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL,
	 0},
	{"redis://h x:1", CP_ERR_CONFIG, REDIS_TCP, NULL, 0, NULL, NULL, NULL,
	 0},
};

static int
str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static void
test_config_parse_redis_url(void **state)
{
	char err[256];
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(url_cases); i++) {
		const struct url_case *t = &url_cases[i];
		struct redis_addr a;
		enum cp_err ret;

		err[0] = '\0';
		ret = config_parse_redis_url(t->url, &a, err, sizeof(err));
		if (ret != t->ret)
			fail_msg("row %zu \"%s\": returned %d, want %d (%s)", i,
				 t->url, (int)ret, (int)t->ret, err);
		if (ret != CP_OK) {
			if (strncmp(err, "REDIS_URL:", 10) != 0)
				fail_msg("row %zu \"%s\": message \"%s\"", i,
					 t->url, err);
			if (a.ra_host != NULL || a.ra_path != NULL ||
			    a.ra_user != NULL || a.ra_password != NULL)
				fail_msg("row %zu \"%s\": left allocations", i,
					 t->url);
			continue;
		}
		if (a.ra_kind != t->kind || !str_eq(a.ra_host, t->host) ||
		    (t->kind == REDIS_TCP && a.ra_port != t->port) ||
		    !str_eq(a.ra_path, t->path) ||
		    !str_eq(a.ra_user, t->user) ||
		    !str_eq(a.ra_password, t->password) || a.ra_db != t->db)
			fail_msg("row %zu \"%s\": got kind %d host %s port %d "
				 "path %s user %s password %s db %d",
				 i, t->url, (int)a.ra_kind, nz(a.ra_host),
				 a.ra_port, nz(a.ra_path), nz(a.ra_user),
				 nz(a.ra_password), a.ra_db);
		config_free_redis_addr(&a);
		assert_null(a.ra_host);
		assert_null(a.ra_password);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_good),
		cmocka_unit_test(test_config_bad),
		cmocka_unit_test(test_config_bad_short_errbuf),
		cmocka_unit_test(test_config_key_caps),
		cmocka_unit_test(test_config_ca_file),
		cmocka_unit_test(test_config_print_masks_secrets),
		cmocka_unit_test(test_config_print_every_setting),
		cmocka_unit_test(test_config_print_lines),
		cmocka_unit_test(test_config_orgs),
		cmocka_unit_test(test_config_print_orgs),
		cmocka_unit_test(test_config_org_and_limits_caps),
		cmocka_unit_test(test_config_parse_redis_url),
	};

	return cmocka_run_group_tests_name("test_config", tests, NULL, NULL);
}
