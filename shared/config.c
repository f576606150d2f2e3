/*
 * config.c - environment -> struct config, validated once at start.
 *
 * Every setting is one row of settings[] (name, kind, field, bounds or
 * accepted words, default, sensitive flag), in the manner of redis's
 * static_configs[]: config_load reads the rows in order and config_print
 * prints them. The row macros check each field's type at compile time.
 * Sensitive settings (API keys, REDIS_URL and its password) never appear
 * in a message or in --check-config.
 */
#include "config.h"

#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_API_BASE      "https://api.cerebras.ai/v1"
#define DEFAULT_REDIS_URL     "redis://127.0.0.1:6379/0"
#define DEFAULT_REDIS_PREFIX  "{cerebras-proxy}"
#define DEFAULT_METRICS_ALLOW "127.0.0.0/8,::1"

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

/*
 * A key goes into an HTTP header: visible ASCII only, and neither ',' nor
 * '|' (the separators).
 */
static int
key_char_ok(char c)
{
	return c > 0x20 && c < 0x7f && c != ',' && c != '|';
}

/* Narrows [*s, *e) to leave out the spaces at either end. */
static void
trim(const char **s, const char **e)
{
	while (*s < *e && is_space(**s))
		(*s)++;
	while (*e > *s && is_space((*e)[-1]))
		(*e)--;
}

/* The first sep in [s, e), else e. */
static const char *
find_sep(const char *s, const char *e, char sep)
{
	const char *q = memchr(s, sep, (size_t)(e - s));

	return q != NULL ? q : e;
}

/*
 * The next non-empty item of a comma-separated list, trimmed, into [*s,
 * *e), *p moved past it; 0 when [*p, lim) holds no more. Empty items are
 * skipped.
 */
static int
next_item(const char **p, const char *lim, const char **s, const char **e)
{
	while (*p < lim) {
		*s = *p;
		*e = find_sep(*p, lim, ',');
		*p = *e < lim ? *e + 1 : lim;
		trim(s, e);
		if (*s < *e)
			return 1;
	}
	return 0;
}

/*
 * Copies at most 40 bytes of [s, e) into out, control characters, quotes
 * and non-ASCII escaped: safe to quote in a message.
 */
static const char *
quote(const char *s, const char *e, char *out, size_t outsz)
{
	char tmp[41];
	size_t n = (size_t)(e - s);

	if (n > sizeof(tmp) - 1)
		n = sizeof(tmp) - 1;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	return log_escape(tmp, out, outsz);
}

/* Appends the key [s, e) as key #nkeys, of organisation org. */
static enum cp_err
add_key(struct config *c, const char *s, const char *e, int org, char *err,
	size_t errsz)
{
	size_t i;

	if (c->nkeys >= CONFIG_MAX_KEYS) {
		seterr(err, errsz, "CEREBRAS_API_KEYS: more than %d keys",
		       CONFIG_MAX_KEYS);
		return CP_ERR_CONFIG;
	}
	if ((size_t)(e - s) > CONFIG_MAX_KEY_LEN) {
		seterr(err, errsz,
		       "CEREBRAS_API_KEYS: key #%d is longer than %d "
		       "characters",
		       c->nkeys, CONFIG_MAX_KEY_LEN);
		return CP_ERR_CONFIG;
	}
	for (i = 0; s + i < e; i++) {
		if (!key_char_ok(s[i])) {
			seterr(err, errsz,
			       "CEREBRAS_API_KEYS: key #%d contains a space or "
			       "control character",
			       c->nkeys);
			return CP_ERR_CONFIG;
		}
	}
	c->keys[c->nkeys] = xstrndup(s, (size_t)(e - s));
	if (c->keys[c->nkeys] == NULL) {
		seterr(err, errsz, "CEREBRAS_API_KEYS: out of memory");
		return CP_ERR_NOMEM;
	}
	key_fingerprint(c->keys[c->nkeys], c->key_fps[c->nkeys]);
	c->key_org[c->nkeys] = org;
	c->nkeys++;
	return CP_OK;
}

/*
 * Organisation org's fingerprint: that of its keys (first .. nkeys-1)
 * joined by '|', so a lone key's organisation has the key's fingerprint.
 */
static enum cp_err
org_fingerprint(struct config *c, int org, int first, char *err, size_t errsz)
{
	size_t len = 0;
	size_t off = 0;
	size_t n;
	char *joined;
	int i;

	for (i = first; i < c->nkeys; i++)
		len += strlen(c->keys[i]) + 1;
	joined = malloc(len);
	if (joined == NULL) {
		seterr(err, errsz, "CEREBRAS_API_KEYS: out of memory");
		return CP_ERR_NOMEM;
	}
	for (i = first; i < c->nkeys; i++) {
		if (i > first)
			joined[off++] = '|';
		n = strlen(c->keys[i]);
		memcpy(joined + off, c->keys[i], n);
		off += n;
	}
	joined[off] = '\0';
	key_fingerprint(joined, c->org_fps[org]);
	/* It holds the keys: do not leave them in freed memory. */
	explicit_bzero(joined, len);
	free(joined);
	return CP_OK;
}

/*
 * One comma item of CEREBRAS_API_KEYS, [s, e) trimmed and not empty: the
 * keys of one organisation, joined by '|', none of them empty.
 */
static enum cp_err
parse_org(struct config *c, const char *s, const char *e, char *err,
	  size_t errsz)
{
	int org = c->norgs;
	int first = c->nkeys;
	const char *q;
	const char *sep;
	const char *ks;
	const char *ke;
	enum cp_err r;

	for (q = s;; q = sep + 1) {
		sep = find_sep(q, e, '|');
		ks = q;
		ke = sep;
		trim(&ks, &ke);
		if (ks == ke) {
			seterr(err, errsz,
			       "CEREBRAS_API_KEYS: organisation #%d has an "
			       "empty key at #%d (keys joined by '|' must not "
			       "be empty)",
			       org, c->nkeys);
			return CP_ERR_CONFIG;
		}
		r = add_key(c, ks, ke, org, err, errsz);
		if (r != CP_OK)
			return r;
		if (sep == e)
			break;
	}
	r = org_fingerprint(c, org, first, err, errsz);
	if (r != CP_OK)
		return r;
	c->norgs++;
	return CP_OK;
}

/*
 * v: the variable's value, NULL if unset. Comma-separated organisations,
 * each one key or several joined by '|' (keys of one Cerebras
 * organisation share its limits).
 */
static enum cp_err
parse_keys(struct config *c, const char *v, char *err, size_t errsz)
{
	const char *p;
	const char *lim;
	const char *s;
	const char *e;
	enum cp_err r;

	if (v == NULL) {
		seterr(err, errsz,
		       "CEREBRAS_API_KEYS: not set (expected a comma-separated "
		       "list of Cerebras API keys)");
		return CP_ERR_CONFIG;
	}
	c->keys = calloc(CONFIG_MAX_KEYS, sizeof(*c->keys));
	c->key_fps = calloc(CONFIG_MAX_KEYS, sizeof(*c->key_fps));
	c->key_org = calloc(CONFIG_MAX_KEYS, sizeof(*c->key_org));
	c->org_fps = calloc(CONFIG_MAX_KEYS, sizeof(*c->org_fps));
	if (c->keys == NULL || c->key_fps == NULL || c->key_org == NULL ||
	    c->org_fps == NULL) {
		seterr(err, errsz, "CEREBRAS_API_KEYS: out of memory");
		return CP_ERR_NOMEM;
	}
	lim = v + strlen(v);
	p = v;
	while (next_item(&p, lim, &s, &e)) {
		r = parse_org(c, s, e, err, errsz);
		if (r != CP_OK)
			return r;
	}
	if (c->nkeys == 0) {
		seterr(err, errsz,
		       "CEREBRAS_API_KEYS: no key given (expected a "
		       "comma-separated list of Cerebras API keys)");
		return CP_ERR_CONFIG;
	}
	return CP_OK;
}

/*
 * Keys appear as their count, index and fingerprint only; the keys of an
 * organisation with several are joined by '|'.
 */
static void
print_keys(const struct config *c, FILE *fp)
{
	int i;

	if (c->norgs == c->nkeys) {
		fprintf(fp, "CEREBRAS_API_KEYS=%d keys:", c->nkeys);
		for (i = 0; i < c->nkeys; i++)
			fprintf(fp, " #%d(%s)", i, c->key_fps[i]);
		fprintf(fp, "\n");
		return;
	}
	fprintf(fp, "CEREBRAS_API_KEYS=%d keys, %d organisation%s:", c->nkeys,
		c->norgs, c->norgs == 1 ? "" : "s");
	for (i = 0; i < c->nkeys; i++)
		fprintf(fp, "%s#%d(%s)",
			i > 0 && c->key_org[i] == c->key_org[i - 1] ? "|" : " ",
			i, c->key_fps[i]);
	fprintf(fp, "\n");
}

/*
 * CEREBRAS_LIMITS: "[MODEL:]name=value,...;..." with names in dl_cap's
 * order (that of headers.h's hdr_limit_names).
 */
static const char *const limit_names[CONFIG_NLIMITS] = {
	"rpm", "tpm", "rph", "tph", "rpd", "tpd",
};

#define LIMITS_MAX_ENTRIES   256
#define LIMITS_MAX_MODEL_LEN 127
#define LIMITS_MAX_VALUE     1000000000000LL

/*
 * How an entry is named in messages: "every model", or the model name in
 * quotes. out must hold at least 3 bytes.
 */
static const char *
entry_name(const struct declared_limits *dl, char *out, size_t outsz)
{
	size_t n;

	if (dl->dl_model == NULL)
		return "every model";
	out[0] = '"';
	quote(dl->dl_model, dl->dl_model + strlen(dl->dl_model), out + 1,
	      outsz - 2);
	n = strlen(out);
	out[n] = '"';
	out[n + 1] = '\0';
	return out;
}

/* Sets dl->dl_model to the model name [s, e) (trimmed), checked. */
static enum cp_err
limits_model(struct config *c, struct declared_limits *dl, const char *s,
	     const char *e, char *err, size_t errsz)
{
	char q[200];
	size_t i;
	int j;

	trim(&s, &e);
	if (s == e) {
		seterr(err, errsz,
		       "CEREBRAS_LIMITS: empty model name before ':' (leave "
		       "out \"MODEL:\" for limits of every model)");
		return CP_ERR_CONFIG;
	}
	if ((size_t)(e - s) > LIMITS_MAX_MODEL_LEN) {
		seterr(err, errsz,
		       "CEREBRAS_LIMITS: model name \"%s...\" is longer than "
		       "%d "
		       "bytes",
		       quote(s, e, q, sizeof(q)), LIMITS_MAX_MODEL_LEN);
		return CP_ERR_CONFIG;
	}
	for (i = 0; s + i < e; i++) {
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
			seterr(err, errsz,
			       "CEREBRAS_LIMITS: model name \"%s\" contains a "
			       "control character",
			       quote(s, e, q, sizeof(q)));
			return CP_ERR_CONFIG;
		}
		/* Most likely a ';' left out: "rpm=30,gpt-oss-120b:rpm=5". */
		if (s[i] == '=' || s[i] == ',') {
			seterr(err, errsz,
			       "CEREBRAS_LIMITS: model name \"%s\" contains "
			       "'%c' "
			       "(entries are separated by ';')",
			       quote(s, e, q, sizeof(q)), s[i]);
			return CP_ERR_CONFIG;
		}
	}
	for (j = 0; j < c->nlimits; j++) {
		const char *m = c->limits[j].dl_model;

		if (m != NULL && strlen(m) == (size_t)(e - s) &&
		    memcmp(m, s, (size_t)(e - s)) == 0) {
			seterr(err, errsz,
			       "CEREBRAS_LIMITS: model \"%s\" given twice",
			       quote(s, e, q, sizeof(q)));
			return CP_ERR_CONFIG;
		}
	}
	dl->dl_model = xstrndup(s, (size_t)(e - s));
	if (dl->dl_model == NULL) {
		seterr(err, errsz, "CEREBRAS_LIMITS: out of memory");
		return CP_ERR_NOMEM;
	}
	return CP_OK;
}

/* One "name=value" of entry dl, [s, e) trimmed and not empty. */
static enum cp_err
limits_pair(struct declared_limits *dl, const char *s, const char *e, char *err,
	    size_t errsz)
{
	const char *eq = find_sep(s, e, '=');
	const char *ns = s;
	const char *ne = eq;
	const char *vs = eq + 1;
	const char *ve = e;
	const char *why;
	char q[200];
	char q2[200];
	char num[32];
	long long n;
	int i;

	if (eq == e) {
		seterr(err, errsz,
		       "CEREBRAS_LIMITS: expected name=value, got \"%s\"",
		       quote(s, e, q, sizeof(q)));
		return CP_ERR_CONFIG;
	}
	trim(&ns, &ne);
	trim(&vs, &ve);
	for (i = 0; i < CONFIG_NLIMITS; i++)
		if (strlen(limit_names[i]) == (size_t)(ne - ns) &&
		    memcmp(limit_names[i], ns, (size_t)(ne - ns)) == 0)
			break;
	if (i == CONFIG_NLIMITS) {
		seterr(err, errsz,
		       "CEREBRAS_LIMITS: unknown limit \"%s\" (expected rpm, "
		       "tpm, rph, tph, rpd or tpd: requests or tokens per "
		       "minute, hour or day)",
		       quote(ns, ne, q, sizeof(q)));
		return CP_ERR_CONFIG;
	}
	if (dl->dl_cap[i] != 0) {
		seterr(err, errsz, "CEREBRAS_LIMITS: %s given twice for %s",
		       limit_names[i], entry_name(dl, q, sizeof(q)));
		return CP_ERR_CONFIG;
	}
	/* parse_ll reads a string: a longer one is too large or no number. */
	if ((size_t)(ve - vs) >= sizeof(num)) {
		why = strspn(vs, "0123456789") >= (size_t)(ve - vs)
			      ? "too large"
			      : "not a number";
	} else {
		memcpy(num, vs, (size_t)(ve - vs));
		num[ve - vs] = '\0';
		if (parse_ll(num, 1, LIMITS_MAX_VALUE, &n, &why) == CP_OK) {
			dl->dl_cap[i] = n;
			return CP_OK;
		}
	}
	seterr(err, errsz,
	       "CEREBRAS_LIMITS: %s for %s: %s: \"%s\" (expected 1..%lld)",
	       limit_names[i], entry_name(dl, q2, sizeof(q2)), why,
	       quote(vs, ve, q, sizeof(q)), LIMITS_MAX_VALUE);
	return CP_ERR_CONFIG;
}

/* One entry, [s, e) trimmed and not empty: "[MODEL:]name=value,...". */
static enum cp_err
limits_entry(struct config *c, const char *s, const char *e, char *err,
	     size_t errsz)
{
	struct declared_limits *dl;
	const char *colon = find_sep(s, e, ':');
	const char *p;
	const char *ps;
	const char *pe;
	char q[200];
	int npairs = 0;
	int j;
	enum cp_err r;

	/*
	 * parse_limits made room for this entry, zeroed (calloc); counted
	 * below, config_free frees it.
	 */
	dl = &c->limits[c->nlimits];
	if (colon != e) {
		r = limits_model(c, dl, s, colon, err, errsz);
		if (r != CP_OK)
			return r;
		p = colon + 1;
	} else {
		for (j = 0; j < c->nlimits; j++) {
			if (c->limits[j].dl_model == NULL) {
				seterr(err, errsz,
				       "CEREBRAS_LIMITS: the limits of every "
				       "model (the entry without \"MODEL:\") "
				       "given twice");
				return CP_ERR_CONFIG;
			}
		}
		p = s;
	}
	c->nlimits++;
	while (p < e) {
		ps = p;
		pe = find_sep(p, e, ',');
		p = pe < e ? pe + 1 : e;
		trim(&ps, &pe);
		if (ps == pe)
			continue;
		r = limits_pair(dl, ps, pe, err, errsz);
		if (r != CP_OK)
			return r;
		npairs++;
	}
	if (npairs == 0) {
		seterr(err, errsz,
		       "CEREBRAS_LIMITS: no name=value given for %s",
		       entry_name(dl, q, sizeof(q)));
		return CP_ERR_CONFIG;
	}
	return CP_OK;
}

/* v: the value, NULL if unset (nothing declared; so is an empty value). */
static enum cp_err
parse_limits(struct config *c, const char *v, char *err, size_t errsz)
{
	const char *p;
	const char *lim;
	const char *s;
	const char *e;
	size_t n = 1;
	enum cp_err r;

	if (v == NULL)
		return CP_OK;
	for (p = v; *p != '\0'; p++)
		if (*p == ';')
			n++;
	if (n > LIMITS_MAX_ENTRIES)
		n = LIMITS_MAX_ENTRIES;
	c->limits = calloc(n, sizeof(*c->limits));
	if (c->limits == NULL) {
		seterr(err, errsz, "CEREBRAS_LIMITS: out of memory");
		return CP_ERR_NOMEM;
	}
	lim = p;
	p = v;
	while (p < lim) {
		s = p;
		e = find_sep(p, lim, ';');
		p = e < lim ? e + 1 : lim;
		trim(&s, &e);
		if (s == e)
			continue; /* empty entry: ignored */
		if ((size_t)c->nlimits >= n) {
			/* n counts every entry up to LIMITS_MAX_ENTRIES. */
			seterr(err, errsz,
			       "CEREBRAS_LIMITS: more than %d entries",
			       LIMITS_MAX_ENTRIES);
			return CP_ERR_CONFIG;
		}
		r = limits_entry(c, s, e, err, errsz);
		if (r != CP_OK)
			return r;
	}
	return CP_OK;
}

/* One entry's "name=value,..." in dl_cap's order. */
static void
print_caps(const struct declared_limits *dl, FILE *fp)
{
	const char *sep = "";
	int i;

	for (i = 0; i < CONFIG_NLIMITS; i++) {
		if (dl->dl_cap[i] == 0)
			continue;
		fprintf(fp, "%s%s=%lld", sep, limit_names[i], dl->dl_cap[i]);
		sep = ",";
	}
}

/*
 * Normalised: the entry for every model first, then the models in the
 * order given, each one's limits in the order rpm tpm rph tph rpd tpd.
 */
static void
print_limits(const struct config *c, FILE *fp)
{
	const char *sep = "";
	int i;

	if (c->nlimits == 0) {
		fprintf(fp, "CEREBRAS_LIMITS=(none: learned from Cerebras' "
			    "answers)\n");
		return;
	}
	fprintf(fp, "CEREBRAS_LIMITS=");
	for (i = 0; i < c->nlimits; i++) {
		if (c->limits[i].dl_model == NULL) {
			print_caps(&c->limits[i], fp);
			sep = ";";
		}
	}
	for (i = 0; i < c->nlimits; i++) {
		if (c->limits[i].dl_model != NULL) {
			fprintf(fp, "%s%s:", sep, c->limits[i].dl_model);
			print_caps(&c->limits[i], fp);
			sep = ";";
		}
	}
	fprintf(fp, "\n");
}

void
config_declared(const struct config *c, const char *model,
		long long out[CONFIG_NLIMITS])
{
	const struct declared_limits *dl;
	int i;
	int j;

	memset(out, 0, CONFIG_NLIMITS * sizeof(out[0]));
	for (i = 0; i < c->nlimits; i++) {
		if (c->limits[i].dl_model == NULL)
			memcpy(out, c->limits[i].dl_cap,
			       CONFIG_NLIMITS * sizeof(out[0]));
	}
	if (model == NULL || *model == '\0')
		return;
	for (i = 0; i < c->nlimits; i++) {
		dl = &c->limits[i];
		if (dl->dl_model == NULL || strcmp(dl->dl_model, model) != 0)
			continue;
		for (j = 0; j < CONFIG_NLIMITS; j++)
			if (dl->dl_cap[j] != 0)
				out[j] = dl->dl_cap[j];
	}
}

static enum cp_err
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
		return CP_ERR_CONFIG;
	}
	if (*host == '\0' || *host == '/') {
		seterr(err, errsz, "CEREBRAS_API_BASE: no host name");
		return CP_ERR_CONFIG;
	}
	for (i = 0; i < n; i++) {
		if ((unsigned char)v[i] <= 0x20 ||
		    (unsigned char)v[i] >= 0x7f || v[i] == '?' || v[i] == '#') {
			seterr(err, errsz,
			       "CEREBRAS_API_BASE: must be a plain URL with no "
			       "spaces, query or fragment");
			return CP_ERR_CONFIG;
		}
	}
	while (n > 0 && v[n - 1] == '/')
		n--;
	c->api_base = xstrndup(v, n);
	c->chat_url = malloc(n + sizeof("/chat/completions"));
	c->completions_url = malloc(n + sizeof("/completions"));
	c->models_url = malloc(n + sizeof("/models"));
	if (c->api_base == NULL || c->chat_url == NULL ||
	    c->completions_url == NULL || c->models_url == NULL) {
		seterr(err, errsz, "CEREBRAS_API_BASE: out of memory");
		return CP_ERR_NOMEM;
	}
	memcpy(c->chat_url, v, n);
	memcpy(c->chat_url + n, "/chat/completions",
	       sizeof("/chat/completions"));
	memcpy(c->completions_url, v, n);
	memcpy(c->completions_url + n, "/completions", sizeof("/completions"));
	memcpy(c->models_url, v, n);
	memcpy(c->models_url + n, "/models", sizeof("/models"));
	return CP_OK;
}

/* v: the path, NULL if unset; empty also means libcurl's default store. */
static enum cp_err
parse_ca_file(struct config *c, const char *v, char *err, size_t errsz)
{
	char q[256];

	if (v == NULL || *v == '\0')
		return CP_OK;
	if (access(v, R_OK) != 0) {
		seterr(err, errsz, "CEREBRAS_CA_FILE: cannot read \"%s\"",
		       log_escape(v, q, sizeof(q)));
		return CP_ERR_CONFIG;
	}
	c->ca_file = xstrndup(v, strlen(v));
	if (c->ca_file == NULL) {
		seterr(err, errsz, "CEREBRAS_CA_FILE: out of memory");
		return CP_ERR_NOMEM;
	}
	return CP_OK;
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
 * Sets *out to a copy of n bytes of s with %XX escapes decoded (so a
 * password may hold '@', ':' or '/'); the caller frees it. Returns CP_OK,
 * CP_ERR_INVAL on a bad or NUL escape, or CP_ERR_NOMEM.
 */
static enum cp_err
pct_decode(const char *s, size_t n, char **out)
{
	char *p = malloc(n + 1);
	size_t i;
	size_t o = 0;
	int hi;
	int lo;

	if (p == NULL)
		return CP_ERR_NOMEM;
	for (i = 0; i < n; i++) {
		if (s[i] != '%') {
			p[o++] = s[i];
			continue;
		}
		if (i + 2 >= n) {
			free(p);
			return CP_ERR_INVAL;
		}
		hi = hexval(s[i + 1]);
		lo = hexval(s[i + 2]);
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
			free(p);
			return CP_ERR_INVAL;
		}
		p[o++] = (char)(hi << 4 | lo);
		i += 2;
	}
	p[o] = '\0';
	*out = p;
	return CP_OK;
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
	if (a->ra_password != NULL) {
		/* Do not leave secrets in freed memory. */
		explicit_bzero(a->ra_password, strlen(a->ra_password));
		free(a->ra_password);
	}
	memset(a, 0, sizeof(*a));
}

/* Parses "?db=N" (unix sockets) or "/N" (tcp) database numbers. */
static enum cp_err
parse_db(const char *s, int *db, char *err, size_t errsz)
{
	long long v;
	const char *why;

	if (*s == '\0')
		return CP_OK;
	if (parse_ll(s, 0, 1000000, &v, &why) != CP_OK) {
		seterr(err, errsz,
		       "REDIS_URL: database number %s (expected 0..1000000)",
		       why);
		return CP_ERR_CONFIG;
	}
	*db = (int)v;
	return CP_OK;
}

/*
 * Accepted forms:
 *   redis://[[user]:password@]host[:port][/db]
 *   unix:///path/to/redis.sock[?db=N]   (also unix:/path)
 * IPv6 hosts go in brackets: redis://[::1]:6379/0.
 */
enum cp_err
config_parse_redis_url(const char *url, struct redis_addr *a, char *err,
		       size_t errsz)
{
	const char *p;
	const char *at;
	const char *colon;
	const char *hend;
	const char *q;
	long long port;
	const char *why;
	enum cp_err e;

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
			return CP_ERR_CONFIG;
		}
		q = strchr(p, '?');
		a->ra_path = xstrndup(p, q ? (size_t)(q - p) : strlen(p));
		if (a->ra_path == NULL)
			goto nomem;
		if (q != NULL) {
			if (strncmp(q, "?db=", 4) != 0) {
				seterr(err, errsz,
				       "REDIS_URL: only ?db=N may follow a "
				       "unix socket path");
				goto fail;
			}
			if (parse_db(q + 4, &a->ra_db, err, errsz) != CP_OK)
				goto fail;
		}
		return CP_OK;
	}
	if (strncmp(url, "redis://", 8) != 0) {
		seterr(err, errsz,
		       "REDIS_URL: expected redis://[:password@]host:port/db "
		       "or unix:///path/redis.sock");
		return CP_ERR_CONFIG;
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
			e = pct_decode(p, (size_t)(colon - p), &a->ra_user);
			if (e == CP_ERR_NOMEM)
				goto nomem;
			if (e != CP_OK)
				goto badpct;
		}
		e = pct_decode(colon + 1, (size_t)(at - colon - 1),
			       &a->ra_password);
		if (e == CP_ERR_NOMEM)
			goto nomem;
		if (e != CP_OK)
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
		if (parse_ll(portbuf, 1, 65535, &port, &why) != CP_OK) {
			seterr(err, errsz,
			       "REDIS_URL: port %s (expected 1..65535)", why);
			goto fail;
		}
		a->ra_port = (int)port;
	}
	if (*hend == '/' && parse_db(hend + 1, &a->ra_db, err, errsz) != CP_OK)
		goto fail;
	return CP_OK;
badpct:
	seterr(err, errsz, "REDIS_URL: bad %%-escape in the credentials");
	goto fail;
nomem:
	seterr(err, errsz, "REDIS_URL: out of memory");
	config_free_redis_addr(a);
	return CP_ERR_NOMEM;
fail:
	config_free_redis_addr(a);
	return CP_ERR_CONFIG;
}

/* v: the URL, NULL if unset; empty also means the default. */
static enum cp_err
parse_redis(struct config *c, const char *v, char *err, size_t errsz)
{
	enum cp_err e;

	if (v == NULL || *v == '\0')
		v = DEFAULT_REDIS_URL;
	c->redis_enabled = strcmp(v, "none") != 0;
	if (!c->redis_enabled)
		v = DEFAULT_REDIS_URL; /* parsed, never used */
	e = config_parse_redis_url(v, &c->redis, err, errsz);
	if (e != CP_OK)
		return e;
	c->redis_url = xstrndup(v, strlen(v));
	if (c->redis_url == NULL) {
		seterr(err, errsz, "REDIS_URL: out of memory");
		return CP_ERR_NOMEM;
	}
	return CP_OK;
}

void
config_redis_str(const struct config *c, char *out, size_t outsz)
{
	const struct redis_addr *a = &c->redis;
	int ipv6;

	if (!c->redis_enabled) {
		snprintf(out, outsz, "none (per-host scheduling only)");
		return;
	}
	if (a->ra_kind == REDIS_UNIX) {
		snprintf(out, outsz, "unix://%s?db=%d%s", a->ra_path, a->ra_db,
			 a->ra_password ? " (password set)" : "");
		return;
	}
	ipv6 = strchr(a->ra_host, ':') != NULL;
	snprintf(out, outsz, "redis://%s%s%s%s:%d/%d",
		 a->ra_password ? "***@" : "", ipv6 ? "[" : "", a->ra_host,
		 ipv6 ? "]" : "", a->ra_port, a->ra_db);
}

/* The address, with the password (and user) as "***". */
static void
print_redis(const struct config *c, FILE *fp)
{
	char url[CONFIG_REDIS_STR_MAX];

	config_redis_str(c, url, sizeof(url));
	fprintf(fp, "REDIS_URL=%s\n", url);
}

/* Wraps a prefix with no {hash tag} in braces so Cluster keeps one slot. */
static enum cp_err
parse_prefix(struct config *c, const char *v, char *err, size_t errsz)
{
	const char *open = strchr(v, '{');
	const char *close = open ? strchr(open, '}') : NULL;
	size_t n = strlen(v);
	size_t i;

	if (n == 0 || n > 128) {
		seterr(err, errsz, "REDIS_PREFIX: must be 1..128 characters");
		return CP_ERR_CONFIG;
	}
	for (i = 0; i < n; i++) {
		if ((unsigned char)v[i] <= 0x20 ||
		    (unsigned char)v[i] >= 0x7f) {
			seterr(err, errsz,
			       "REDIS_PREFIX: only visible ASCII characters "
			       "allowed");
			return CP_ERR_CONFIG;
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
		return CP_ERR_NOMEM;
	}
	return CP_OK;
}

static enum cp_err
parse_origins(struct config *c, const char *v, char *err, size_t errsz)
{
	size_t i;

	for (i = 0; v[i] != '\0'; i++) {
		if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] >= 0x7f) {
			seterr(err, errsz,
			       "CORS_ALLOW_ORIGINS: only visible ASCII "
			       "allowed");
			return CP_ERR_CONFIG;
		}
	}
	if (i == 0) {
		seterr(err, errsz,
		       "CORS_ALLOW_ORIGINS: empty (use * or a comma-separated "
		       "list of origins)");
		return CP_ERR_CONFIG;
	}
	c->cors_origins = xstrndup(v, i);
	if (c->cors_origins == NULL) {
		seterr(err, errsz, "CORS_ALLOW_ORIGINS: out of memory");
		return CP_ERR_NOMEM;
	}
	return CP_OK;
}

/*
 * CEREBRAS_API_BASE as --check-config shows it: a "user:password@" in
 * it (credentials for a gateway between) is masked.
 */
static void
print_api_base(const struct config *c, FILE *fp)
{
	const char *host = strstr(c->api_base, "://");
	const char *at;
	const char *slash;

	host = host != NULL ? host + 3 : c->api_base;
	slash = strchr(host, '/');
	at = memchr(host, '@',
		    slash != NULL ? (size_t)(slash - host) : strlen(host));
	if (at == NULL) {
		fprintf(fp, "CEREBRAS_API_BASE=%s\n", c->api_base);
		return;
	}
	fprintf(fp, "CEREBRAS_API_BASE=%.*s***%s\n", (int)(host - c->api_base),
		c->api_base, at);
}

/* PROXY_TOKENS: a comma-separated list of client tokens (secrets). */
static enum cp_err
parse_tokens(struct config *c, const char *v, char *err, size_t errsz)
{
	const char *p;
	const char *lim;
	const char *s;
	const char *e;
	const char *q;
	int i;

	if (v == NULL || *v == '\0')
		return CP_OK; /* empty, as in an env file: unset */
	c->tokens = calloc(CONFIG_MAX_TOKENS, sizeof(*c->tokens));
	if (c->tokens == NULL) {
		seterr(err, errsz, "PROXY_TOKENS: out of memory");
		return CP_ERR_NOMEM;
	}
	lim = v + strlen(v);
	for (p = v; next_item(&p, lim, &s, &e);) {
		if (c->ntokens >= CONFIG_MAX_TOKENS) {
			seterr(err, errsz, "PROXY_TOKENS: more than %d tokens",
			       CONFIG_MAX_TOKENS);
			return CP_ERR_CONFIG;
		}
		if ((size_t)(e - s) < CONFIG_MIN_TOKEN_LEN ||
		    (size_t)(e - s) > CONFIG_MAX_TOKEN_LEN) {
			seterr(err, errsz,
			       "PROXY_TOKENS: token #%d is not %d to %d "
			       "characters long",
			       c->ntokens, CONFIG_MIN_TOKEN_LEN,
			       CONFIG_MAX_TOKEN_LEN);
			return CP_ERR_CONFIG;
		}
		for (q = s; q < e; q++) {
			if (!key_char_ok(*q)) {
				seterr(err, errsz,
				       "PROXY_TOKENS: token #%d contains a "
				       "space or control character",
				       c->ntokens);
				return CP_ERR_CONFIG;
			}
		}
		for (i = 0; i < c->ntokens; i++) {
			if (strlen(c->tokens[i]) == (size_t)(e - s) &&
			    memcmp(c->tokens[i], s, (size_t)(e - s)) == 0) {
				seterr(err, errsz,
				       "PROXY_TOKENS: token #%d repeats token "
				       "#%d",
				       c->ntokens, i);
				return CP_ERR_CONFIG;
			}
		}
		c->tokens[c->ntokens] = xstrndup(s, (size_t)(e - s));
		if (c->tokens[c->ntokens] == NULL) {
			seterr(err, errsz, "PROXY_TOKENS: out of memory");
			return CP_ERR_NOMEM;
		}
		c->ntokens++;
	}
	if (c->ntokens == 0) {
		seterr(err, errsz,
		       "PROXY_TOKENS: set but empty (unset it to leave the "
		       "proxy open)");
		return CP_ERR_CONFIG;
	}
	return CP_OK;
}

/* Tokens appear as their count and fingerprints only. */
static void
print_tokens(const struct config *c, FILE *fp)
{
	char fp8[9];
	int i;

	if (c->ntokens == 0) {
		fprintf(fp, "PROXY_TOKENS=(none)\n");
		return;
	}
	fprintf(fp, "PROXY_TOKENS=%d token%s:", c->ntokens,
		c->ntokens == 1 ? "" : "s");
	for (i = 0; i < c->ntokens; i++) {
		key_fingerprint(c->tokens[i], fp8);
		fprintf(fp, " token#%d(%s)", i, fp8);
	}
	fprintf(fp, "\n");
}

/* v: the path, NULL if unset. The file itself is read by clients.c. */
static enum cp_err
parse_tokens_file(struct config *c, const char *v, char *err, size_t errsz)
{
	char q[256];

	if (v == NULL || *v == '\0')
		return CP_OK; /* empty, as in an env file: unset */
	if (access(v, R_OK) != 0) {
		seterr(err, errsz, "PROXY_TOKENS_FILE: cannot read \"%s\"",
		       log_escape(v, q, sizeof(q)));
		return CP_ERR_CONFIG;
	}
	c->tokens_file = xstrndup(v, strlen(v));
	if (c->tokens_file == NULL) {
		seterr(err, errsz, "PROXY_TOKENS_FILE: out of memory");
		return CP_ERR_NOMEM;
	}
	return CP_OK;
}

static const struct {
	const char *ru_name;
	long ru_ms;
} rate_units[] = {
	{"s", 1000L},	    {"sec", 1000L},	{"second", 1000L},
	{"m", 60000L},	    {"min", 60000L},	{"minute", 60000L},
	{"h", 3600000L},    {"hour", 3600000L}, {"d", 86400000L},
	{"day", 86400000L},
};

int
config_parse_rate(const char *s, long *n, long *window_ms, const char **why)
{
	const char *slash;
	char num[24];
	long long v;
	size_t i;

	*n = 0;
	*window_ms = 0;
	if (strcmp(s, "0") == 0 || strcmp(s, "none") == 0)
		return 0;
	slash = strchr(s, '/');
	if (slash == NULL || slash == s || (size_t)(slash - s) >= sizeof(num)) {
		*why = "expected N/unit, e.g. 60/min (unit: s, min, hour, "
		       "day), or none";
		return -1;
	}
	memcpy(num, s, (size_t)(slash - s));
	num[slash - s] = '\0';
	if (parse_ll(num, 1, 1000000000LL, &v, why) != CP_OK)
		return -1;
	for (i = 0; i < NELEM(rate_units); i++) {
		if (strcmp(slash + 1, rate_units[i].ru_name) == 0) {
			*n = (long)v;
			*window_ms = rate_units[i].ru_ms;
			return 0;
		}
	}
	*why = "unknown unit after '/' (expected s, min, hour or day)";
	return -1;
}

void
config_rate_str(long n, long window_ms, char *out, size_t outsz)
{
	const char *unit = "s";
	long div = 1000;

	if (n <= 0) {
		snprintf(out, outsz, "none");
		return;
	}
	if (window_ms % 86400000L == 0)
		unit = "day", div = 86400000L;
	else if (window_ms % 3600000L == 0)
		unit = "hour", div = 3600000L;
	else if (window_ms % 60000L == 0)
		unit = "min", div = 60000L;
	if (window_ms / div == 1)
		snprintf(out, outsz, "%ld/%s", n, unit);
	else
		snprintf(out, outsz, "%ld/%ld%s", n, window_ms / div, unit);
}

static enum cp_err
parse_client_rate(struct config *c, const char *v, char *err, size_t errsz)
{
	char q[164];
	const char *why = "";

	if (v == NULL || *v == '\0')
		return CP_OK;
	if (config_parse_rate(v, &c->client_rate, &c->client_window_ms, &why) !=
	    0) {
		seterr(err, errsz, "CLIENT_RATE_LIMIT: %s: \"%s\"", why,
		       quote(v, v + strlen(v), q, sizeof(q)));
		return CP_ERR_CONFIG;
	}
	return CP_OK;
}

static void
print_client_rate(const struct config *c, FILE *fp)
{
	char s[48];

	config_rate_str(c->client_rate, c->client_window_ms, s, sizeof(s));
	fprintf(fp, "CLIENT_RATE_LIMIT=%s\n", s);
}

/* One address or CIDR of TRUSTED_PROXIES, [s, e). */
static int
parse_cidr(const char *s, const char *e, struct config_cidr *out)
{
	char text[INET6_ADDRSTRLEN + 8];
	char *slash;
	long long bits;
	const char *why;
	size_t n = (size_t)(e - s);

	if (n >= sizeof(text))
		return -1;
	memcpy(text, s, n);
	text[n] = '\0';
	slash = strchr(text, '/');
	if (slash != NULL)
		*slash = '\0';
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, text, out->cc_addr) == 1) {
		out->cc_family = AF_INET;
		out->cc_bits = 32;
	} else if (inet_pton(AF_INET6, text, out->cc_addr) == 1) {
		out->cc_family = AF_INET6;
		out->cc_bits = 128;
	} else
		return -1;
	if (slash != NULL) {
		if (parse_ll(slash + 1, 0, out->cc_bits, &bits, &why) != CP_OK)
			return -1;
		out->cc_bits = (int)bits;
	}
	return 0;
}

/*
 * A comma list of addresses and CIDRs for the variable name into *out,
 * *n entries. Empty (or unset) is none.
 */
static enum cp_err
parse_cidr_list(const char *name, const char *v, struct config_cidr **out,
		int *count, char *err, size_t errsz)
{
	const char *p;
	const char *lim;
	const char *s;
	const char *e;
	char q[64];
	size_t n = 1;

	if (v == NULL)
		return CP_OK;
	for (p = v; *p != '\0'; p++)
		n += *p == ',';
	*out = calloc(n, sizeof(**out));
	if (*out == NULL) {
		seterr(err, errsz, "%s: out of memory", name);
		return CP_ERR_NOMEM;
	}
	lim = v + strlen(v);
	for (p = v; next_item(&p, lim, &s, &e);) {
		if (parse_cidr(s, e, &(*out)[*count]) != 0) {
			seterr(err, errsz,
			       "%s: not an IP address or CIDR: %s (expected "
			       "e.g. 127.0.0.1, 10.0.0.0/8, ::1)",
			       name, quote(s, e, q, sizeof(q)));
			return CP_ERR_CONFIG;
		}
		(*count)++;
	}
	return CP_OK;
}

static void
print_cidr_list(const struct config_cidr *list, int n, FILE *fp)
{
	char a[INET6_ADDRSTRLEN];
	int i;

	for (i = 0; i < n; i++) {
		if (inet_ntop(list[i].cc_family, list[i].cc_addr, a,
			      sizeof(a)) == NULL)
			snprintf(a, sizeof(a), "?");
		fprintf(fp, "%s%s/%d", i > 0 ? "," : "", a, list[i].cc_bits);
	}
}

/* 1 if the address ip (text) is within one of list's n entries. */
static int
cidr_match(const struct config_cidr *list, int n, const char *ip)
{
	unsigned char a[16];
	const struct config_cidr *t;
	int family;
	int i;
	int full;
	int rest;

	if (n == 0 || ip == NULL)
		return 0;
	if (inet_pton(AF_INET, ip, a) == 1)
		family = AF_INET;
	else if (inet_pton(AF_INET6, ip, a) == 1)
		family = AF_INET6;
	else
		return 0;
	for (i = 0; i < n; i++) {
		t = &list[i];
		if (t->cc_family != family)
			continue;
		full = t->cc_bits / 8;
		rest = t->cc_bits % 8;
		if (memcmp(a, t->cc_addr, (size_t)full) != 0)
			continue;
		if (rest != 0 &&
		    ((a[full] ^ t->cc_addr[full]) & (0xff00 >> rest) & 0xff))
			continue;
		return 1;
	}
	return 0;
}

static enum cp_err
parse_trusted(struct config *c, const char *v, char *err, size_t errsz)
{
	return parse_cidr_list("TRUSTED_PROXIES", v, &c->trusted, &c->ntrusted,
			       err, errsz);
}

static void
print_trusted(const struct config *c, FILE *fp)
{
	fprintf(fp, "TRUSTED_PROXIES=");
	if (c->ntrusted == 0)
		fprintf(fp, "(none: X-Forwarded-For is ignored)");
	print_cidr_list(c->trusted, c->ntrusted, fp);
	fprintf(fp, "\n");
}

int
config_trusted(const struct config *c, const char *ip)
{
	return cidr_match(c->trusted, c->ntrusted, ip);
}

static enum cp_err
parse_metrics_allow(struct config *c, const char *v, char *err, size_t errsz)
{
	return parse_cidr_list("METRICS_ALLOW", v, &c->metrics_allow,
			       &c->nmetrics_allow, err, errsz);
}

static void
print_metrics_allow(const struct config *c, FILE *fp)
{
	fprintf(fp, "METRICS_ALLOW=");
	if (c->nmetrics_allow == 0)
		fprintf(fp, "(none: /metrics is refused to everyone)");
	print_cidr_list(c->metrics_allow, c->nmetrics_allow, fp);
	fprintf(fp, "\n");
}

int
config_metrics_allowed(const struct config *c, const char *ip)
{
	return cidr_match(c->metrics_allow, c->nmetrics_allow, ip);
}

/*
 * The settings table.
 *
 * Kinds, and the type of the struct config field each one writes:
 *   INT     long: a number within [min, max];
 *   BOOL    int: 1/yes/true/on or 0/no/false/off;
 *   CHOICE  int: words[0] gives 0, words[1] gives 1;
 *   STRING  char *: parse validates the value (the default when unset)
 *           and stores it; printed as is, or as unset_text when NULL;
 *   SPECIAL several fields: parse sets them, print prints the row.
 * A sensitive setting's value is never copied into a message, and it is
 * printed only through its own print function (else as "***").
 */
enum setting_kind {
	SETTING_INT,
	SETTING_BOOL,
	SETTING_CHOICE,
	SETTING_STRING,
	SETTING_SPECIAL,
};

/* v: the value, or the row's default when unset (which may be NULL). */
typedef enum cp_err (*setting_parse_fn)(struct config *c, const char *v,
					char *err, size_t errsz);
/* Prints the "NAME=value\n" line, secrets masked. */
typedef void (*setting_print_fn)(const struct config *c, FILE *fp);

struct setting {
	const char *s_name;
	enum setting_kind s_kind;
	int s_sensitive;
	size_t s_offset;	  /* of the field (not SPECIAL) */
	long long s_min;	  /* INT */
	long long s_max;	  /* INT */
	long long s_def;	  /* INT; BOOL and CHOICE: 0 or 1 */
	const char *s_words[2];	  /* CHOICE */
	const char *s_defstr;	  /* STRING, SPECIAL: value when unset */
	const char *s_unset;	  /* STRING: printed when the field is NULL */
	setting_parse_fn s_parse; /* STRING, SPECIAL */
	setting_print_fn s_print; /* SPECIAL */
};

/*
 * offsetof(struct config, field), refused at compile time unless the field
 * has exactly type type: the loader writes it through a (type *).
 */
#define CONFIG_FIELD(type, field)                                              \
	(offsetof(struct config, field) +                                      \
	 0 * sizeof(struct {                                                   \
		 _Static_assert(_Generic(((struct config *)0)->field,          \
					 type : 1, default : 0),               \
				"struct config: " #field " is not " #type);    \
		 int ok;                                                       \
	 }))

#define INT_SETTING(name, field, min, max, def)                                \
	{                                                                      \
		.s_name = (name), .s_kind = SETTING_INT,                       \
		.s_offset = CONFIG_FIELD(long, field), .s_min = (min),         \
		.s_max = (max), .s_def = (def)                                 \
	}
#define BOOL_SETTING(name, field, def)                                         \
	{                                                                      \
		.s_name = (name), .s_kind = SETTING_BOOL,                      \
		.s_offset = CONFIG_FIELD(int, field), .s_def = (def)           \
	}
/* def is the index of the default word: 0 or 1. */
#define CHOICE_SETTING(name, field, word0, word1, def)                         \
	{                                                                      \
		.s_name = (name), .s_kind = SETTING_CHOICE,                    \
		.s_offset = CONFIG_FIELD(int, field),                          \
		.s_words = {(word0), (word1)}, .s_def = (def)                  \
	}
#define STRING_SETTING(name, field, def, parse, unset_text)                    \
	{                                                                      \
		.s_name = (name), .s_kind = SETTING_STRING,                    \
		.s_offset = CONFIG_FIELD(char *, field), .s_defstr = (def),    \
		.s_parse = (parse), .s_unset = (unset_text)                    \
	}
/* Not secret, parsed and printed by its own functions. */
#define SPECIAL_SETTING(name, def, parse, print)                               \
	{                                                                      \
		.s_name = (name), .s_kind = SETTING_SPECIAL,                   \
		.s_defstr = (def), .s_parse = (parse), .s_print = (print)      \
	}
#define SECRET_SETTING(name, def, parse, print)                                \
	{                                                                      \
		.s_name = (name), .s_kind = SETTING_SPECIAL, .s_sensitive = 1, \
		.s_defstr = (def), .s_parse = (parse), .s_print = (print)      \
	}

/*
 * In README.md's order, which is also the order of reading (the first bad
 * setting is the one reported) and of --check-config's lines.
 */
static const struct setting settings[] = {
	SECRET_SETTING("CEREBRAS_API_KEYS", NULL, parse_keys, print_keys),
	SPECIAL_SETTING("CEREBRAS_LIMITS", NULL, parse_limits, print_limits),
	SPECIAL_SETTING("CEREBRAS_API_BASE", DEFAULT_API_BASE, parse_api_base,
			print_api_base),
	STRING_SETTING("CEREBRAS_CA_FILE", ca_file, NULL, parse_ca_file,
		       "(libcurl default store)"),
	SECRET_SETTING("REDIS_URL", DEFAULT_REDIS_URL, parse_redis,
		       print_redis),
	CHOICE_SETTING("REDIS_FALLBACK", redis_fallback, "refuse", "local", 1),
	STRING_SETTING("REDIS_PREFIX", redis_prefix, DEFAULT_REDIS_PREFIX,
		       parse_prefix, NULL),
	INT_SETTING("REDIS_TIMEOUT_MS", redis_timeout_ms, 1, 60000, 1000),
	INT_SETTING("RATE_LIMIT_INTERVAL_MS", interval_ms, 0, 3600000, 200),
	CHOICE_SETTING("RATE_LIMIT_SCOPE", scope_per_key, "global", "key", 0),
	INT_SETTING("RATE_LIMIT_GLOBAL_INTERVAL_MS", global_interval_ms, 0,
		    3600000, 0),
	INT_SETTING("QUEUE_MAX_WAIT_MS", queue_max_wait_ms, 0, 3600000, 30000),
	INT_SETTING("UPSTREAM_MAX_ATTEMPTS", max_attempts, 1, 10, 3),
	INT_SETTING("KEY_COOLDOWN_MS", key_cooldown_ms, 1, 86400000, 60000),
	INT_SETTING("KEY_DISABLE_MS", key_disable_ms, 1, 604800000, 3600000),
	INT_SETTING("UPSTREAM_CONNECT_TIMEOUT_MS", connect_timeout_ms, 1,
		    600000, 10000),
	INT_SETTING("UPSTREAM_FIRST_BYTE_TIMEOUT_MS", first_byte_timeout_ms, 1,
		    86400000, 120000),
	INT_SETTING("UPSTREAM_IDLE_TIMEOUT_MS", idle_timeout_ms, 1, 86400000,
		    120000),
	INT_SETTING("DEFAULT_MAX_COMPLETION_TOKENS", default_max_completion, 0,
		    1000000, 0),
	INT_SETTING("MAX_BODY_BYTES", max_body_bytes, 1024, 1073741824,
		    16777216),
	STRING_SETTING("CORS_ALLOW_ORIGINS", cors_origins, "*", parse_origins,
		       NULL),
	SECRET_SETTING("PROXY_TOKENS", NULL, parse_tokens, print_tokens),
	STRING_SETTING("PROXY_TOKENS_FILE", tokens_file, NULL,
		       parse_tokens_file, "(none)"),
	SPECIAL_SETTING("CLIENT_RATE_LIMIT", NULL, parse_client_rate,
			print_client_rate),
	INT_SETTING("CLIENT_MAX_CONCURRENT", client_concurrent, 0, 1000000, 0),
	SPECIAL_SETTING("TRUSTED_PROXIES", NULL, parse_trusted, print_trusted),
	INT_SETTING("MODELS_CACHE_S", models_cache_s, 0, 86400, 300),
	SPECIAL_SETTING("METRICS_ALLOW", DEFAULT_METRICS_ALLOW,
			parse_metrics_allow, print_metrics_allow),
	BOOL_SETTING("LOG_REQUESTS", log_requests, 1),
	CHOICE_SETTING("LOG_FORMAT", log_json, "text", "json", 0),
	INT_SETTING("WORKER_THREADS", threads, 1, 4096, 2),
	INT_SETTING("WORKER_MAX_THREADS", max_threads, 1, 4096, 512),
	INT_SETTING("WORKER_IDLE_TIMEOUT_MS", thread_idle_ms, 100, 86400000,
		    30000),
	INT_SETTING("DRAIN_TIMEOUT_MS", drain_timeout_ms, 0, 86400000, 10000),
};

/* The field a row writes; the row macros checked its type. */
static void *
field_at(struct config *c, const struct setting *s)
{
	return (char *)c + s->s_offset;
}

static const void *
cfield_at(const struct config *c, const struct setting *s)
{
	return (const char *)c + s->s_offset;
}

static enum cp_err
load_int(struct config *c, const struct setting *s, const char *v, char *err,
	 size_t errsz)
{
	char q[164];
	long long n = s->s_def;
	const char *why;

	if (v != NULL && parse_ll(v, s->s_min, s->s_max, &n, &why) != CP_OK) {
		if (s->s_sensitive)
			seterr(err, errsz, "%s: %s (expected %lld..%lld)",
			       s->s_name, why, s->s_min, s->s_max);
		else
			seterr(err, errsz,
			       "%s: %s: \"%s\" (expected %lld..%lld)",
			       s->s_name, why,
			       quote(v, v + strlen(v), q, sizeof(q)), s->s_min,
			       s->s_max);
		return CP_ERR_CONFIG;
	}
	*(long *)field_at(c, s) = (long)n;
	return CP_OK;
}

static enum cp_err
load_bool(struct config *c, const struct setting *s, const char *v, char *err,
	  size_t errsz)
{
	int *out = field_at(c, s);

	if (v == NULL)
		*out = (int)s->s_def;
	else if (strcmp(v, "1") == 0 || strcmp(v, "yes") == 0 ||
		 strcmp(v, "true") == 0 || strcmp(v, "on") == 0)
		*out = 1;
	else if (strcmp(v, "0") == 0 || strcmp(v, "no") == 0 ||
		 strcmp(v, "false") == 0 || strcmp(v, "off") == 0)
		*out = 0;
	else {
		seterr(err, errsz,
		       "%s: expected 1 or 0 (yes/no, true/false, on/off)",
		       s->s_name);
		return CP_ERR_CONFIG;
	}
	return CP_OK;
}

static enum cp_err
load_choice(struct config *c, const struct setting *s, const char *v, char *err,
	    size_t errsz)
{
	int *out = field_at(c, s);

	if (v == NULL)
		*out = (int)s->s_def;
	else if (strcmp(v, s->s_words[0]) == 0)
		*out = 0;
	else if (strcmp(v, s->s_words[1]) == 0)
		*out = 1;
	else {
		seterr(err, errsz, "%s: expected \"%s\" or \"%s\"", s->s_name,
		       s->s_words[0], s->s_words[1]);
		return CP_ERR_CONFIG;
	}
	return CP_OK;
}

static enum cp_err
load_setting(struct config *c, const struct setting *s, const char *v,
	     char *err, size_t errsz)
{
	switch (s->s_kind) {
	case SETTING_INT: return load_int(c, s, v, err, errsz);
	case SETTING_BOOL: return load_bool(c, s, v, err, errsz);
	case SETTING_CHOICE: return load_choice(c, s, v, err, errsz);
	case SETTING_STRING:
	case SETTING_SPECIAL:
		return s->s_parse(c, v != NULL ? v : s->s_defstr, err, errsz);
	}
	return CP_ERR_CONFIG;
}

enum cp_err
config_load(struct config *c, config_lookup_fn lookup, void *ctx, char *err,
	    size_t errsz)
{
	const char *v;
	const char *why;
	long long n;
	size_t i;
	enum cp_err e;

	memset(c, 0, sizeof(*c));
	for (i = 0; i < NELEM(settings); i++) {
		e = load_setting(c, &settings[i],
				 lookup(settings[i].s_name, ctx), err, errsz);
		if (e != CP_OK) {
			config_free(c);
			return e;
		}
	}

	/* WORKER_MAX_THREADS below WORKER_THREADS: the minimum wins. */
	if (c->max_threads < c->threads)
		c->max_threads = c->threads;
	c->threads_given =
		(lookup("WORKER_THREADS", ctx) != NULL && c->threads > 1) ||
		(lookup("WORKER_MAX_THREADS", ctx) != NULL &&
		 c->max_threads > 1);

	/*
	 * Set by systemd, not by the user (so not in settings[] nor in
	 * --check-config): anything odd means "none".
	 */
	v = lookup("LISTEN_PID", ctx);
	if (v != NULL && parse_ll(v, 1, 1LL << 31, &n, &why) == CP_OK)
		c->listen_pid = (long)n;
	v = lookup("LISTEN_FDS", ctx);
	if (v != NULL && parse_ll(v, 1, 1024, &n, &why) == CP_OK)
		c->listen_fds = (long)n;
	return CP_OK;
}

/* The one place in the project that reads the process environment. */
static const char *
env_lookup(const char *name, void *ctx)
{
	(void)ctx;
	return getenv(name);
}

enum cp_err
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
	free(c->key_org);
	free(c->org_fps);
	if (c->limits != NULL) {
		for (i = 0; i < c->nlimits; i++)
			free(c->limits[i].dl_model);
		free(c->limits);
	}
	free(c->api_base);
	free(c->chat_url);
	free(c->completions_url);
	free(c->models_url);
	free(c->ca_file);
	if (c->redis_url != NULL) {
		/* It may hold the Redis password. */
		explicit_bzero(c->redis_url, strlen(c->redis_url));
		free(c->redis_url);
	}
	config_free_redis_addr(&c->redis);
	free(c->redis_prefix);
	free(c->cors_origins);
	if (c->tokens != NULL) {
		for (i = 0; i < c->ntokens; i++) {
			explicit_bzero(c->tokens[i], strlen(c->tokens[i]));
			free(c->tokens[i]);
		}
		free(c->tokens);
	}
	free(c->tokens_file);
	free(c->trusted);
	free(c->metrics_allow);
	memset(c, 0, sizeof(*c));
}

void
config_print(const struct config *c, FILE *fp)
{
	const struct setting *s;
	const char *str;
	size_t i;

	for (i = 0; i < NELEM(settings); i++) {
		s = &settings[i];
		if (s->s_print != NULL) {
			s->s_print(c, fp);
			continue;
		}
		if (s->s_sensitive) {
			fprintf(fp, "%s=***\n", s->s_name);
			continue;
		}
		switch (s->s_kind) {
		case SETTING_INT:
			fprintf(fp, "%s=%ld\n", s->s_name,
				*(const long *)cfield_at(c, s));
			break;
		case SETTING_BOOL:
			fprintf(fp, "%s=%d\n", s->s_name,
				*(const int *)cfield_at(c, s));
			break;
		case SETTING_CHOICE:
			fprintf(fp, "%s=%s\n", s->s_name,
				s->s_words[*(const int *)cfield_at(c, s) != 0]);
			break;
		case SETTING_STRING:
			str = *(char *const *)cfield_at(c, s);
			fprintf(fp, "%s=%s\n", s->s_name,
				str != NULL ? str : s->s_unset);
			break;
		case SETTING_SPECIAL: break; /* printed by s_print */
		}
	}
}
