/*
 * config.c - environment -> struct config, validated once at start.
 *
 * Integer settings come from one table (name, bounds, default) in the
 * manner of redis's static_configs[]; strings have their own validators.
 * Secrets (API keys, the Redis password) never appear in a message.
 */
#include "config.h"

#include "log.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_API_BASE     "https://api.cerebras.ai/v1"
#define DEFAULT_REDIS_URL    "redis://127.0.0.1:6379/0"
#define DEFAULT_REDIS_PREFIX "{cerebras-proxy}"

struct int_setting {
	const char *name;
	long long min;
	long long max;
	long long def;
	size_t offset; /* of a long in struct config */
};

static const struct int_setting int_settings[] = {
	{"RATE_LIMIT_INTERVAL_MS", 0, 3600000, 200,
	 offsetof(struct config, interval_ms)},
	{"RATE_LIMIT_GLOBAL_INTERVAL_MS", 0, 3600000, 0,
	 offsetof(struct config, global_interval_ms)},
	{"QUEUE_MAX_WAIT_MS", 0, 3600000, 30000,
	 offsetof(struct config, queue_max_wait_ms)},
	{"UPSTREAM_MAX_ATTEMPTS", 1, 10, 3,
	 offsetof(struct config, max_attempts)},
	{"KEY_COOLDOWN_MS", 1, 86400000, 60000,
	 offsetof(struct config, key_cooldown_ms)},
	{"KEY_DISABLE_MS", 1, 604800000, 3600000,
	 offsetof(struct config, key_disable_ms)},
	{"REDIS_TIMEOUT_MS", 1, 60000, 1000,
	 offsetof(struct config, redis_timeout_ms)},
	{"UPSTREAM_CONNECT_TIMEOUT_MS", 1, 600000, 10000,
	 offsetof(struct config, connect_timeout_ms)},
	{"UPSTREAM_IDLE_TIMEOUT_MS", 1, 86400000, 120000,
	 offsetof(struct config, idle_timeout_ms)},
	{"UPSTREAM_FIRST_BYTE_TIMEOUT_MS", 1, 86400000, 120000,
	 offsetof(struct config, first_byte_timeout_ms)},
	{"MAX_BODY_BYTES", 1024, 1073741824, 16777216,
	 offsetof(struct config, max_body_bytes)},
	{"WORKER_THREADS", 1, 1024, 1, offsetof(struct config, threads)},
	{"DRAIN_TIMEOUT_MS", 0, 86400000, 10000,
	 offsetof(struct config, drain_timeout_ms)},
};

static void seterr(char *err, size_t errsz, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errsz, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vsnprintf(err, errsz, fmt, ap) < 0 && errsz > 0)
		err[0] = '\0';
	va_end(ap);
}

static char *
xstrndup(const char *s, size_t n)
{
	char *p = malloc(n + 1);

	if (p == NULL)
		return NULL;
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

static int
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A key goes into an HTTP header: visible ASCII only, no ',' (the separator). */
static int
key_char_ok(char c)
{
	return c > 0x20 && c < 0x7f && c != ',';
}

static int
parse_keys(struct config *c, const char *v, char *err, size_t errsz)
{
	const char *p = v;
	const char *start;
	const char *end;
	size_t i;

	while (*p != '\0') {
		start = p;
		while (*p != '\0' && *p != ',')
			p++;
		end = p;
		if (*p == ',')
			p++;
		while (start < end && is_space(*start))
			start++;
		while (end > start && is_space(end[-1]))
			end--;
		if (start == end)
			continue; /* empty item: ignored */
		if (c->nkeys >= CONFIG_MAX_KEYS) {
			seterr(err, errsz,
			       "CEREBRAS_API_KEYS: more than %d keys",
			       CONFIG_MAX_KEYS);
			return -1;
		}
		if ((size_t)(end - start) > CONFIG_MAX_KEY_LEN) {
			seterr(err, errsz,
			       "CEREBRAS_API_KEYS: key #%d is longer than %d "
			       "characters",
			       c->nkeys, CONFIG_MAX_KEY_LEN);
			return -1;
		}
		for (i = 0; start + i < end; i++) {
			if (!key_char_ok(start[i])) {
				seterr(err, errsz,
				       "CEREBRAS_API_KEYS: key #%d contains a "
				       "space or control character",
				       c->nkeys);
				return -1;
			}
		}
		c->keys[c->nkeys] = xstrndup(start, (size_t)(end - start));
		if (c->keys[c->nkeys] == NULL) {
			seterr(err, errsz, "CEREBRAS_API_KEYS: out of memory");
			return -1;
		}
		key_fingerprint(c->keys[c->nkeys], c->key_fps[c->nkeys]);
		c->nkeys++;
	}
	if (c->nkeys == 0) {
		seterr(err, errsz,
		       "CEREBRAS_API_KEYS: no key given (expected a "
		       "comma-separated list of Cerebras API keys)");
		return -1;
	}
	return 0;
}

static int
parse_api_base(struct config *c, const char *v, char *err, size_t errsz)
{
	size_t n = strlen(v);
	size_t i;
	const char *host;

	if (strncmp(v, "https://", 8) == 0)
		host = v + 8;
	else if (strncmp(v, "http://", 7) == 0)
		host = v + 7;
	else {
		seterr(err, errsz,
		       "CEREBRAS_API_BASE: must start with https:// or "
		       "http://");
		return -1;
	}
	if (*host == '\0' || *host == '/') {
		seterr(err, errsz, "CEREBRAS_API_BASE: no host name");
		return -1;
	}
	for (i = 0; i < n; i++) {
		if ((unsigned char)v[i] <= 0x20 ||
		    (unsigned char)v[i] >= 0x7f || v[i] == '?' || v[i] == '#') {
			seterr(err, errsz,
			       "CEREBRAS_API_BASE: must be a plain URL with no "
			       "spaces, query or fragment");
			return -1;
		}
	}
	while (n > 0 && v[n - 1] == '/')
		n--;
	c->api_base = xstrndup(v, n);
	c->chat_url = malloc(n + sizeof("/chat/completions"));
	if (c->api_base == NULL || c->chat_url == NULL) {
		seterr(err, errsz, "CEREBRAS_API_BASE: out of memory");
		return -1;
	}
	memcpy(c->chat_url, v, n);
	memcpy(c->chat_url + n, "/chat/completions",
	       sizeof("/chat/completions"));
	return 0;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Copies n bytes of s, decoding %XX escapes (so a password may hold '@',
 * ':' or '/'). Returns NULL on a bad escape or no memory.
 */
static char *
pct_decode(const char *s, size_t n)
{
	char *out = malloc(n + 1);
	size_t i;
	size_t o = 0;
	int hi;
	int lo;

	if (out == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		if (s[i] != '%') {
			out[o++] = s[i];
			continue;
		}
		if (i + 2 >= n) {
			free(out);
			return NULL;
		}
		hi = hexval(s[i + 1]);
		lo = hexval(s[i + 2]);
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
			free(out);
			return NULL;
		}
		out[o++] = (char)(hi << 4 | lo);
		i += 2;
	}
	out[o] = '\0';
	return out;
}

/* Host names: letters, digits, '.', '-', '_' (and ':' inside [IPv6]). */
static int
host_ok(const char *h, int ipv6)
{
	for (; *h != '\0'; h++) {
		if ((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') ||
		    (*h >= '0' && *h <= '9') || *h == '.' || *h == '-' ||
		    *h == '_' || (ipv6 && (*h == ':' || *h == '%')))
			continue;
		return 0;
	}
	return 1;
}

void
config_free_redis_addr(struct redis_addr *a)
{
	free(a->ra_host);
	free(a->ra_path);
	free(a->ra_user);
	free(a->ra_password);
	memset(a, 0, sizeof(*a));
}

/* Parses "?db=N" (unix sockets) or "/N" (tcp) database numbers. */
static int
parse_db(const char *s, int *db, char *err, size_t errsz)
{
	long long v;
	const char *why;

	if (*s == '\0')
		return 0;
	if (parse_ll(s, 0, 1000000, &v, &why) != 0) {
		seterr(err, errsz,
		       "REDIS_URL: database number %s (expected 0..1000000)",
		       why);
		return -1;
	}
	*db = (int)v;
	return 0;
}

/*
 * Accepted forms:
 *   redis://[[user]:password@]host[:port][/db]
 *   unix:///path/to/redis.sock[?db=N]   (also unix:/path)
 * IPv6 hosts go in brackets: redis://[::1]:6379/0.
 */
int
config_parse_redis_url(const char *url, struct redis_addr *a, char *err,
		       size_t errsz)
{
	const char *p;
	const char *at;
	const char *colon;
	const char *hend;
	const char *q;
	char *path = NULL;
	long long port;
	const char *why;

	memset(a, 0, sizeof(*a));
	a->ra_port = 6379;
	if (strncmp(url, "unix:", 5) == 0) {
		a->ra_kind = REDIS_UNIX;
		p = url + 5;
		if (strncmp(p, "//", 2) == 0)
			p += 2;
		if (*p != '/') {
			seterr(err, errsz,
			       "REDIS_URL: unix socket path must be absolute "
			       "(unix:///path/redis.sock)");
			return -1;
		}
		q = strchr(p, '?');
		path = xstrndup(p, q ? (size_t)(q - p) : strlen(p));
		if (path == NULL)
			goto nomem;
		a->ra_path = path;
		if (q != NULL) {
			if (strncmp(q, "?db=", 4) != 0) {
				seterr(err, errsz,
				       "REDIS_URL: only ?db=N may follow a "
				       "unix socket path");
				goto fail;
			}
			if (parse_db(q + 4, &a->ra_db, err, errsz) != 0)
				goto fail;
		}
		return 0;
	}
	if (strncmp(url, "redis://", 8) != 0) {
		seterr(err, errsz,
		       "REDIS_URL: expected redis://[:password@]host:port/db "
		       "or unix:///path/redis.sock");
		return -1;
	}
	a->ra_kind = REDIS_TCP;
	p = url + 8;
	hend = p + strcspn(p, "/");
	at = NULL;
	for (q = p; q < hend; q++)
		if (*q == '@')
			at = q; /* the last '@' ends the credentials */
	if (at != NULL) {
		colon = memchr(p, ':', (size_t)(at - p));
		if (colon == NULL) {
			seterr(err, errsz,
			       "REDIS_URL: credentials must be :password@ or "
			       "user:password@");
			goto fail;
		}
		if (colon > p) {
			a->ra_user = pct_decode(p, (size_t)(colon - p));
			if (a->ra_user == NULL)
				goto badpct;
		}
		a->ra_password =
			pct_decode(colon + 1, (size_t)(at - colon - 1));
		if (a->ra_password == NULL)
			goto badpct;
		p = at + 1;
	}
	if (*p == '[') {
		q = memchr(p, ']', (size_t)(hend - p));
		if (q == NULL) {
			seterr(err, errsz,
			       "REDIS_URL: unterminated [IPv6] host");
			goto fail;
		}
		a->ra_host = xstrndup(p + 1, (size_t)(q - p - 1));
		colon = q + 1 < hend && q[1] == ':' ? q + 1 : NULL;
		if (q + 1 < hend && colon == NULL) {
			seterr(err, errsz, "REDIS_URL: junk after [IPv6] host");
			goto fail;
		}
	} else {
		colon = memchr(p, ':', (size_t)(hend - p));
		a->ra_host = xstrndup(p, colon ? (size_t)(colon - p)
					       : (size_t)(hend - p));
	}
	if (a->ra_host == NULL)
		goto nomem;
	if (a->ra_host[0] == '\0') {
		seterr(err, errsz, "REDIS_URL: no host name");
		goto fail;
	}
	if (!host_ok(a->ra_host, *p == '[')) {
		seterr(err, errsz,
		       "REDIS_URL: bad character in host name (credentials go "
		       "before '@', percent-encoded)");
		goto fail;
	}
	if (colon != NULL) {
		char portbuf[16];
		size_t plen = (size_t)(hend - colon - 1);

		if (plen >= sizeof(portbuf)) {
			seterr(err, errsz, "REDIS_URL: port too long");
			goto fail;
		}
		memcpy(portbuf, colon + 1, plen);
		portbuf[plen] = '\0';
		if (parse_ll(portbuf, 1, 65535, &port, &why) != 0) {
			seterr(err, errsz,
			       "REDIS_URL: port %s (expected 1..65535)", why);
			goto fail;
		}
		a->ra_port = (int)port;
	}
	if (*hend == '/' && parse_db(hend + 1, &a->ra_db, err, errsz) != 0)
		goto fail;
	return 0;
badpct:
	seterr(err, errsz,
	       "REDIS_URL: bad %%-escape in the credentials (or out of "
	       "memory)");
	goto fail;
nomem:
	seterr(err, errsz, "REDIS_URL: out of memory");
fail:
	config_free_redis_addr(a);
	return -1;
}

/* Wraps a prefix with no {hash tag} in braces so Cluster keeps one slot. */
static int
parse_prefix(struct config *c, const char *v, char *err, size_t errsz)
{
	const char *open = strchr(v, '{');
	const char *close = open ? strchr(open, '}') : NULL;
	size_t n = strlen(v);
	size_t i;

	if (n == 0 || n > 128) {
		seterr(err, errsz, "REDIS_PREFIX: must be 1..128 characters");
		return -1;
	}
	for (i = 0; i < n; i++) {
		if ((unsigned char)v[i] <= 0x20 ||
		    (unsigned char)v[i] >= 0x7f) {
			seterr(err, errsz,
			       "REDIS_PREFIX: only visible ASCII characters "
			       "allowed");
			return -1;
		}
	}
	if (open != NULL && close != NULL && close > open + 1) {
		c->redis_prefix = xstrndup(v, n);
	} else {
		c->redis_prefix = malloc(n + 3);
		if (c->redis_prefix != NULL)
			snprintf(c->redis_prefix, n + 3, "{%s}", v);
	}
	if (c->redis_prefix == NULL) {
		seterr(err, errsz, "REDIS_PREFIX: out of memory");
		return -1;
	}
	return 0;
}

static int
parse_origins(struct config *c, const char *v, char *err, size_t errsz)
{
	size_t i;

	for (i = 0; v[i] != '\0'; i++) {
		if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] >= 0x7f) {
			seterr(err, errsz,
			       "CORS_ALLOW_ORIGINS: only visible ASCII "
			       "allowed");
			return -1;
		}
	}
	if (i == 0) {
		seterr(err, errsz,
		       "CORS_ALLOW_ORIGINS: empty (use * or a comma-separated "
		       "list of origins)");
		return -1;
	}
	c->cors_origins = xstrndup(v, i);
	if (c->cors_origins == NULL) {
		seterr(err, errsz, "CORS_ALLOW_ORIGINS: out of memory");
		return -1;
	}
	return 0;
}

/* A two-word setting: v0 gives 0, v1 gives 1, unset gives def. */
static int
parse_choice(const char *name, const char *v, const char *v0, const char *v1,
	     int def, int *out, char *err, size_t errsz)
{
	if (v == NULL) {
		*out = def;
		return 0;
	}
	if (strcmp(v, v0) == 0 || strcmp(v, v1) == 0) {
		*out = strcmp(v, v1) == 0;
		return 0;
	}
	seterr(err, errsz, "%s: expected \"%s\" or \"%s\"", name, v0, v1);
	return -1;
}

static int
parse_bool(const char *name, const char *v, int *out, char *err, size_t errsz)
{
	if (strcmp(v, "1") == 0 || strcmp(v, "yes") == 0 ||
	    strcmp(v, "true") == 0 || strcmp(v, "on") == 0) {
		*out = 1;
		return 0;
	}
	if (strcmp(v, "0") == 0 || strcmp(v, "no") == 0 ||
	    strcmp(v, "false") == 0 || strcmp(v, "off") == 0) {
		*out = 0;
		return 0;
	}
	seterr(err, errsz, "%s: expected 1 or 0 (yes/no, true/false, on/off)",
	       name);
	return -1;
}

int
config_load(struct config *c, config_lookup_fn lookup, void *ctx, char *err,
	    size_t errsz)
{
	const char *v;
	const char *why;
	long long n;
	size_t i;

	memset(c, 0, sizeof(*c));
	c->keys = calloc(CONFIG_MAX_KEYS, sizeof(*c->keys));
	c->key_fps = calloc(CONFIG_MAX_KEYS, sizeof(*c->key_fps));
	if (c->keys == NULL || c->key_fps == NULL) {
		seterr(err, errsz, "CEREBRAS_API_KEYS: out of memory");
		goto fail;
	}
	v = lookup("CEREBRAS_API_KEYS", ctx);
	if (v == NULL) {
		seterr(err, errsz,
		       "CEREBRAS_API_KEYS: not set (expected a comma-separated "
		       "list of Cerebras API keys)");
		goto fail;
	}
	if (parse_keys(c, v, err, errsz) != 0)
		goto fail;

	v = lookup("CEREBRAS_API_BASE", ctx);
	if (parse_api_base(c, v ? v : DEFAULT_API_BASE, err, errsz) != 0)
		goto fail;

	v = lookup("CEREBRAS_CA_FILE", ctx);
	if (v != NULL && *v != '\0') {
		if (access(v, R_OK) != 0) {
			seterr(err, errsz,
			       "CEREBRAS_CA_FILE: cannot read \"%.200s\"", v);
			goto fail;
		}
		c->ca_file = xstrndup(v, strlen(v));
		if (c->ca_file == NULL)
			goto nomem;
	}

	v = lookup("REDIS_URL", ctx);
	if (v == NULL || *v == '\0')
		v = DEFAULT_REDIS_URL;
	c->redis_enabled = strcmp(v, "none") != 0;
	if (!c->redis_enabled)
		v = DEFAULT_REDIS_URL; /* parsed, never used */
	if (config_parse_redis_url(v, &c->redis, err, errsz) != 0)
		goto fail;
	c->redis_url = xstrndup(v, strlen(v));
	if (c->redis_url == NULL)
		goto nomem;

	v = lookup("REDIS_PREFIX", ctx);
	if (parse_prefix(c, v ? v : DEFAULT_REDIS_PREFIX, err, errsz) != 0)
		goto fail;

	for (i = 0; i < NELEM(int_settings); i++) {
		const struct int_setting *s = &int_settings[i];

		v = lookup(s->name, ctx);
		n = s->def;
		if (v != NULL && parse_ll(v, s->min, s->max, &n, &why) != 0) {
			seterr(err, errsz,
			       "%s: %s: \"%.40s\" (expected %lld..%lld)",
			       s->name, why, v, s->min, s->max);
			goto fail;
		}
		*(long *)((char *)c + s->offset) = (long)n;
	}

	if (parse_choice("REDIS_FALLBACK", lookup("REDIS_FALLBACK", ctx),
			 "refuse", "local", 1, &c->redis_fallback, err,
			 errsz) != 0 ||
	    parse_choice("RATE_LIMIT_SCOPE", lookup("RATE_LIMIT_SCOPE", ctx),
			 "global", "key", 0, &c->scope_per_key, err,
			 errsz) != 0)
		goto fail;

	v = lookup("CORS_ALLOW_ORIGINS", ctx);
	if (parse_origins(c, v ? v : "*", err, errsz) != 0)
		goto fail;

	c->log_requests = 1;
	v = lookup("LOG_REQUESTS", ctx);
	if (v != NULL &&
	    parse_bool("LOG_REQUESTS", v, &c->log_requests, err, errsz) != 0)
		goto fail;

	/* Set by systemd, not by the user: anything odd means "none". */
	v = lookup("LISTEN_PID", ctx);
	if (v != NULL && parse_ll(v, 1, 1LL << 31, &n, &why) == 0)
		c->listen_pid = (long)n;
	v = lookup("LISTEN_FDS", ctx);
	if (v != NULL && parse_ll(v, 1, 1024, &n, &why) == 0)
		c->listen_fds = (long)n;
	return 0;
nomem:
	seterr(err, errsz, "configuration: out of memory");
fail:
	config_free(c);
	return -1;
}

/* The one place in the project that reads the process environment. */
static const char *
env_lookup(const char *name, void *ctx)
{
	(void)ctx;
	return getenv(name);
}

int
config_load_env(struct config *c, char *err, size_t errsz)
{
	return config_load(c, env_lookup, NULL, err, errsz);
}

/* In plain CGI mode the request itself arrives in the environment. */
const char *
config_cgi_param(void *ctx, const char *name)
{
	return env_lookup(name, ctx);
}

void
config_free(struct config *c)
{
	int i;

	if (c->keys != NULL) {
		for (i = 0; i < c->nkeys; i++) {
			/* Do not leave secrets in freed memory. */
			explicit_bzero(c->keys[i], strlen(c->keys[i]));
			free(c->keys[i]);
		}
		free(c->keys);
	}
	free(c->key_fps);
	free(c->api_base);
	free(c->chat_url);
	free(c->ca_file);
	free(c->redis_url);
	config_free_redis_addr(&c->redis);
	free(c->redis_prefix);
	free(c->cors_origins);
	memset(c, 0, sizeof(*c));
}

void
config_print(const struct config *c, FILE *fp)
{
	int i;
	size_t j;

	fprintf(fp, "CEREBRAS_API_KEYS=%d keys:", c->nkeys);
	for (i = 0; i < c->nkeys; i++)
		fprintf(fp, " #%d(%s)", i, c->key_fps[i]);
	fprintf(fp, "\n");
	fprintf(fp, "CEREBRAS_API_BASE=%s\n", c->api_base);
	fprintf(fp, "CEREBRAS_CA_FILE=%s\n",
		c->ca_file ? c->ca_file : "(libcurl default store)");
	if (!c->redis_enabled)
		fprintf(fp, "REDIS_URL=none (per-host scheduling only)\n");
	else if (c->redis.ra_kind == REDIS_UNIX)
		fprintf(fp, "REDIS_URL=unix://%s?db=%d%s\n", c->redis.ra_path,
			c->redis.ra_db,
			c->redis.ra_password ? " (password set)" : "");
	else
		fprintf(fp, "REDIS_URL=redis://%s%s%s%s:%d/%d\n",
			c->redis.ra_password ? "***@" : "",
			strchr(c->redis.ra_host, ':') ? "[" : "",
			c->redis.ra_host,
			strchr(c->redis.ra_host, ':') ? "]" : "",
			c->redis.ra_port, c->redis.ra_db);
	fprintf(fp, "REDIS_PREFIX=%s\n", c->redis_prefix);
	for (j = 0; j < NELEM(int_settings); j++)
		fprintf(fp, "%s=%ld\n", int_settings[j].name,
			*(const long *)((const char *)c +
					int_settings[j].offset));
	fprintf(fp, "RATE_LIMIT_SCOPE=%s\n",
		c->scope_per_key ? "key" : "global");
	fprintf(fp, "CORS_ALLOW_ORIGINS=%s\n", c->cors_origins);
	fprintf(fp, "LOG_REQUESTS=%d\n", c->log_requests);
}
