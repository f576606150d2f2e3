/*
 * clients.c - client tokens, their names and limits, and the client's
 * address when there are none (see clients.h).
 *
 * One set per process, read by every worker thread under a read lock and
 * replaced whole, under the write lock, when the tokens file changes: a
 * request holds no pointer into it (clients_identify copies what it
 * needs), so a reload never disturbs a request.
 */
#include "clients.h"

#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define TOKENS_FILE_MAX (4 * 1024 * 1024)
#define RELOAD_CHECK_NS 1000000000LL /* the file is looked at once a second */
#define ADDR_MAX	64

struct entry {
	char e_name[CLIENT_NAME_MAX + 1];
	unsigned char e_hash[32]; /* SHA-256 of the token */
	long e_rate;		  /* -1: CLIENT_RATE_LIMIT's */
	long e_window_ms;
	long e_conc; /* -1: CLIENT_MAX_CONCURRENT's */
};

struct set {
	struct entry *s_e; /* owned */
	int s_n;
};

static pthread_rwlock_t set_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct set cur;	   /* under set_lock */
static struct set env_set; /* PROXY_TOKENS: fixed after clients_init */
static int required;	   /* fixed after clients_init */

static pthread_mutex_t reload_mu = PTHREAD_MUTEX_INITIALIZER;
static struct stat loaded_st; /* under reload_mu: the file last read */
static int missing_logged;    /* under reload_mu */
static atomic_int reload_asked;
static _Atomic int64_t next_check_ns;

static int
sha256(const void *p, size_t n, unsigned char out[32])
{
	unsigned int len = 0;

	return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) == 1 && len == 32
		       ? 0
		       : -1;
}

static int
hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

static void
set_free(struct set *s)
{
	if (s->s_e != NULL)
		explicit_bzero(s->s_e, (size_t)s->s_n * sizeof(*s->s_e));
	free(s->s_e);
	s->s_e = NULL;
	s->s_n = 0;
}

static int
name_char_ok(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
	       ch == '-' || ch == '@';
}

static int
token_char_ok(char ch)
{
	return (unsigned char)ch > 0x20 && (unsigned char)ch < 0x7f;
}

/* The next field of [*p, e) separated by blanks, or 0 if none is left. */
static int
next_field(const char **p, const char *e, const char **fs, size_t *fn)
{
	const char *s = *p;

	while (s < e && (*s == ' ' || *s == '\t'))
		s++;
	if (s == e)
		return 0;
	*fs = s;
	while (s < e && *s != ' ' && *s != '\t')
		s++;
	*fn = (size_t)(s - *fs);
	*p = s;
	return 1;
}

/* One "key=value" option of a line into ent; 0, or -1 with why. */
static int
parse_option(const char *s, size_t n, struct entry *ent, char *why,
	     size_t whysz)
{
	char v[48];
	const char *eq = memchr(s, '=', n);
	const char *w = "";
	long long conc;
	size_t kn;

	if (eq == NULL || (size_t)(s + n - eq - 1) >= sizeof(v)) {
		snprintf(why, whysz,
			 "expected rate=N/unit or concurrent=N after the "
			 "token");
		return -1;
	}
	kn = (size_t)(eq - s);
	memcpy(v, eq + 1, (size_t)(s + n - eq - 1));
	v[s + n - eq - 1] = '\0';
	if (kn == 4 && memcmp(s, "rate", 4) == 0) {
		if (config_parse_rate(v, &ent->e_rate, &ent->e_window_ms, &w) !=
		    0) {
			snprintf(why, whysz, "rate: %s", w);
			return -1;
		}
		return 0;
	}
	if (kn == 10 && memcmp(s, "concurrent", 10) == 0) {
		if (strcmp(v, "none") == 0) {
			ent->e_conc = 0;
			return 0;
		}
		if (parse_ll(v, 0, 1000000, &conc, &w) != CP_OK) {
			snprintf(why, whysz,
				 "concurrent: %s (expected "
				 "0..1000000 or none)",
				 w);
			return -1;
		}
		ent->e_conc = (long)conc;
		return 0;
	}
	snprintf(why, whysz,
		 "unknown option (expected rate=N/unit or concurrent=N)");
	return -1;
}

/* One non-empty line into ent; 0, or -1 with why (never the token). */
static int
parse_line(const char *s, const char *e, struct entry *ent, char *why,
	   size_t whysz)
{
	const char *f;
	size_t n;
	size_t i;
	int hi;
	int lo;

	memset(ent, 0, sizeof(*ent));
	ent->e_rate = -1;
	ent->e_conc = -1;
	if (!next_field(&s, e, &f, &n))
		return -1;
	if (n > CLIENT_NAME_MAX) {
		snprintf(why, whysz, "the name is longer than %d characters",
			 CLIENT_NAME_MAX);
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (!name_char_ok(f[i])) {
			snprintf(why, whysz,
				 "the name may hold only letters, digits and "
				 "._-@");
			return -1;
		}
	}
	memcpy(ent->e_name, f, n);
	ent->e_name[n] = '\0';
	if (!next_field(&s, e, &f, &n)) {
		snprintf(why, whysz, "client %s: no token after the name",
			 ent->e_name);
		return -1;
	}
	if (n >= 7 && memcmp(f, "sha256:", 7) == 0) {
		if (n != 7 + 64) {
			snprintf(why, whysz,
				 "client %s: sha256: needs 64 hex digits",
				 ent->e_name);
			return -1;
		}
		for (i = 0; i < 32; i++) {
			hi = hexval((unsigned char)f[7 + 2 * i]);
			lo = hexval((unsigned char)f[8 + 2 * i]);
			if (hi < 0 || lo < 0) {
				snprintf(why, whysz,
					 "client %s: sha256: needs 64 hex "
					 "digits",
					 ent->e_name);
				return -1;
			}
			ent->e_hash[i] = (unsigned char)(hi << 4 | lo);
		}
	} else {
		if (n < CONFIG_MIN_TOKEN_LEN || n > CONFIG_MAX_TOKEN_LEN) {
			snprintf(why, whysz,
				 "client %s: the token is not %d to %d "
				 "characters long",
				 ent->e_name, CONFIG_MIN_TOKEN_LEN,
				 CONFIG_MAX_TOKEN_LEN);
			return -1;
		}
		for (i = 0; i < n; i++) {
			if (!token_char_ok(f[i])) {
				snprintf(why, whysz,
					 "client %s: the token holds a "
					 "non-ASCII or control character",
					 ent->e_name);
				return -1;
			}
		}
		if (sha256(f, n, ent->e_hash) != 0) {
			snprintf(why, whysz, "SHA-256 failed");
			return -1;
		}
	}
	while (next_field(&s, e, &f, &n)) {
		if (parse_option(f, n, ent, why, whysz) != 0)
			return -1;
	}
	return 0;
}

/*
 * A tokens file's text into out (appended to base's entries, which it
 * copies first). CP_OK, or CP_ERR_CONFIG with "line N: ..." in err.
 */
static enum cp_err
parse_file(const char *text, size_t len, const struct set *base,
	   struct set *out, char *err, size_t errsz)
{
	const char *p = text;
	const char *lim = text + len;
	const char *s;
	const char *e;
	const char *nl;
	struct entry ent;
	struct entry *grown;
	char why[160];
	int cap = base->s_n + 16;
	int line = 0;
	int i;

	out->s_n = 0;
	out->s_e = calloc((size_t)cap, sizeof(*out->s_e));
	if (out->s_e == NULL) {
		snprintf(err, errsz, "out of memory");
		return CP_ERR_NOMEM;
	}
	for (i = 0; i < base->s_n; i++)
		out->s_e[out->s_n++] = base->s_e[i];
	while (p < lim) {
		line++;
		nl = memchr(p, '\n', (size_t)(lim - p));
		s = p;
		e = nl != NULL ? nl : lim;
		p = nl != NULL ? nl + 1 : lim;
		if (memchr(s, '\0', (size_t)(e - s)) != NULL) {
			snprintf(err, errsz, "line %d: a NUL byte", line);
			goto fail;
		}
		while (e > s &&
		       (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
			e--;
		while (s < e && (*s == ' ' || *s == '\t'))
			s++;
		if (s == e || *s == '#')
			continue;
		why[0] = '\0';
		if (parse_line(s, e, &ent, why, sizeof(why)) != 0) {
			snprintf(err, errsz, "line %d: %s", line, why);
			goto fail;
		}
		for (i = 0; i < out->s_n; i++) {
			if (strcmp(out->s_e[i].e_name, ent.e_name) == 0) {
				snprintf(err, errsz,
					 "line %d: client %s is named twice",
					 line, ent.e_name);
				goto fail;
			}
			if (i >= base->s_n &&
			    memcmp(out->s_e[i].e_hash, ent.e_hash, 32) == 0) {
				snprintf(err, errsz,
					 "line %d: client %s has the token of "
					 "client %s",
					 line, ent.e_name, out->s_e[i].e_name);
				goto fail;
			}
		}
		if (out->s_n >= CONFIG_MAX_TOKENS + base->s_n) {
			snprintf(err, errsz, "line %d: more than %d clients",
				 line, CONFIG_MAX_TOKENS);
			goto fail;
		}
		if (out->s_n == cap) {
			cap *= 2;
			grown = realloc(out->s_e, (size_t)cap * sizeof(*grown));
			if (grown == NULL) {
				snprintf(err, errsz, "out of memory");
				goto fail;
			}
			out->s_e = grown;
		}
		out->s_e[out->s_n++] = ent;
	}
	explicit_bzero(&ent, sizeof(ent));
	return CP_OK;
fail:
	explicit_bzero(&ent, sizeof(ent));
	set_free(out);
	return CP_ERR_CONFIG;
}

enum cp_err
clients_parse_check(const char *text, size_t len, int *n, char *err,
		    size_t errsz)
{
	struct set empty = {NULL, 0};
	struct set s;
	enum cp_err rc;

	*n = 0;
	rc = parse_file(text, len, &empty, &s, err, errsz);
	if (rc != CP_OK)
		return rc;
	*n = s.s_n;
	set_free(&s);
	return CP_OK;
}

/* Reads path whole (at most TOKENS_FILE_MAX) and fstat's it into st. */
static char *
read_file(const char *path, size_t *len, struct stat *st, char *err,
	  size_t errsz)
{
	FILE *fp = fopen(path, "re");
	char *text = NULL;
	size_t n;

	if (fp == NULL) {
		snprintf(err, errsz, "cannot open: %s", strerror(errno));
		return NULL;
	}
	if (fstat(fileno(fp), st) != 0) {
		snprintf(err, errsz, "fstat: %s", strerror(errno));
		goto out;
	}
	if (!S_ISREG(st->st_mode) || st->st_size > TOKENS_FILE_MAX) {
		snprintf(err, errsz, "not a regular file of at most %d bytes",
			 TOKENS_FILE_MAX);
		goto out;
	}
	text = malloc((size_t)st->st_size + 1);
	if (text == NULL) {
		snprintf(err, errsz, "out of memory");
		goto out;
	}
	n = fread(text, 1, (size_t)st->st_size, fp);
	if (ferror(fp)) {
		snprintf(err, errsz, "read: %s", strerror(errno));
		free(text);
		text = NULL;
		goto out;
	}
	text[n] = '\0';
	*len = n;
out:
	(void)fclose(fp);
	return text;
}

/* Reads the file into a new set after the PROXY_TOKENS entries. */
static enum cp_err
load_file(const char *path, struct set *out, struct stat *st, char *err,
	  size_t errsz)
{
	size_t len = 0;
	char *text = read_file(path, &len, st, err, errsz);
	enum cp_err rc;

	if (text == NULL)
		return CP_ERR_CONFIG;
	rc = parse_file(text, len, &env_set, out, err, errsz);
	explicit_bzero(text, len);
	free(text);
	return rc;
}

enum cp_err
clients_init(const struct config *cfg, char *err, size_t errsz)
{
	struct set s = {NULL, 0};
	char why[200];
	int i;

	clients_free();
	if (cfg->ntokens > 0) {
		env_set.s_e =
			calloc((size_t)cfg->ntokens, sizeof(*env_set.s_e));
		if (env_set.s_e == NULL) {
			snprintf(err, errsz, "PROXY_TOKENS: out of memory");
			return CP_ERR_NOMEM;
		}
		for (i = 0; i < cfg->ntokens; i++) {
			snprintf(env_set.s_e[i].e_name,
				 sizeof(env_set.s_e[i].e_name), "token#%d", i);
			if (sha256(cfg->tokens[i], strlen(cfg->tokens[i]),
				   env_set.s_e[i].e_hash) != 0) {
				snprintf(err, errsz,
					 "PROXY_TOKENS: SHA-256 failed");
				clients_free();
				return CP_ERR_CONFIG;
			}
			env_set.s_e[i].e_rate = -1;
			env_set.s_e[i].e_conc = -1;
		}
		env_set.s_n = cfg->ntokens;
	}
	if (cfg->tokens_file != NULL) {
		if (load_file(cfg->tokens_file, &s, &loaded_st, why,
			      sizeof(why)) != CP_OK) {
			snprintf(err, errsz, "PROXY_TOKENS_FILE: %s", why);
			clients_free();
			return CP_ERR_CONFIG;
		}
	} else if (env_set.s_n > 0) {
		s.s_e = calloc((size_t)env_set.s_n, sizeof(*s.s_e));
		if (s.s_e == NULL) {
			snprintf(err, errsz, "PROXY_TOKENS: out of memory");
			clients_free();
			return CP_ERR_NOMEM;
		}
		memcpy(s.s_e, env_set.s_e,
		       (size_t)env_set.s_n * sizeof(*s.s_e));
		s.s_n = env_set.s_n;
	}
	required = cfg->ntokens > 0 || cfg->tokens_file != NULL;
	cur = s;
	atomic_store(&next_check_ns, mono_ns() + RELOAD_CHECK_NS);
	return CP_OK;
}

void
clients_free(void)
{
	set_free(&cur);
	set_free(&env_set);
	required = 0;
}

int
clients_required(void)
{
	return required;
}

int
clients_count(void)
{
	int n;

	(void)pthread_rwlock_rdlock(&set_lock);
	n = cur.s_n;
	(void)pthread_rwlock_unlock(&set_lock);
	return n;
}

void
clients_request_reload(void)
{
	atomic_store(&reload_asked, 1);
}

static int
same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino &&
	       a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	       a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	       a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

void
clients_maybe_reload(const struct config *cfg)
{
	struct set s = {NULL, 0};
	struct set old;
	struct stat st;
	char why[200];
	int64_t now;
	int asked;

	if (cfg->tokens_file == NULL)
		return;
	now = mono_ns();
	if (!atomic_load(&reload_asked) && now < atomic_load(&next_check_ns))
		return;
	if (pthread_mutex_trylock(&reload_mu) != 0)
		return; /* another thread is at it */
	atomic_store(&next_check_ns, now + RELOAD_CHECK_NS);
	asked = atomic_exchange(&reload_asked, 0);
	if (stat(cfg->tokens_file, &st) != 0) {
		if (!missing_logged)
			log_warnx("PROXY_TOKENS_FILE: %s: %s; keeping the %d "
				  "clients read before",
				  cfg->tokens_file, strerror(errno),
				  clients_count());
		missing_logged = 1;
		goto out;
	}
	missing_logged = 0;
	if (!asked && same_file(&st, &loaded_st))
		goto out;
	if (load_file(cfg->tokens_file, &s, &st, why, sizeof(why)) != CP_OK) {
		log_warnx("PROXY_TOKENS_FILE: %s; keeping the %d clients read "
			  "before",
			  why, clients_count());
		/* Not again until it changes (or SIGHUP). */
		loaded_st = st;
		goto out;
	}
	loaded_st = st;
	(void)pthread_rwlock_wrlock(&set_lock);
	old = cur;
	cur = s;
	(void)pthread_rwlock_unlock(&set_lock);
	set_free(&old);
	log_info("PROXY_TOKENS_FILE: read again%s, clients: %d",
		 asked ? " (SIGHUP)" : " (it changed)", s.s_n);
out:
	(void)pthread_mutex_unlock(&reload_mu);
}

/* The token of an "Authorization: Bearer <token>" value, else NULL. */
static const char *
bearer(const char *v, size_t *n)
{
	const char *e;

	if (v == NULL || strncasecmp(v, "Bearer", 6) != 0 ||
	    (v[6] != ' ' && v[6] != '\t'))
		return NULL;
	v += 6;
	while (*v == ' ' || *v == '\t')
		v++;
	e = v + strlen(v);
	while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*n = (size_t)(e - v);
	return *n > 0 ? v : NULL;
}

/* The id the scheduler keys a client by: hex of SHA-256(kind:what). */
static void
client_id(char kind, const char *what, char out[17])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[32];
	char buf[CLIENT_NAME_MAX + ADDR_MAX + 4];
	int n;
	int i;

	n = snprintf(buf, sizeof(buf), "%c:%s", kind, what);
	if (n < 0 || sha256(buf, strlen(buf), md) != 0)
		memset(md, 0, sizeof(md));
	for (i = 0; i < 8; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[16] = '\0';
}

/* 1 if s is an IPv4 or IPv6 address. */
static int
is_ip(const char *s)
{
	unsigned char a[16];

	return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

void
clients_address(const struct config *cfg, const char *remote, const char *xff,
		char *out, size_t outsz)
{
	char hop[ADDR_MAX];
	const char *e;
	const char *s;
	const char *hs;
	const char *he;

	if (remote == NULL || remote[0] == '\0' || strlen(remote) >= outsz) {
		snprintf(out, outsz, "-");
		return;
	}
	snprintf(out, outsz, "%s", remote);
	if (xff == NULL || !config_trusted(cfg, remote))
		return;
	e = xff + strlen(xff);
	while (e > xff) {
		s = e;
		while (s > xff && s[-1] != ',')
			s--;
		hs = s;
		he = e;
		while (hs < he && (*hs == ' ' || *hs == '\t'))
			hs++;
		while (he > hs && (he[-1] == ' ' || he[-1] == '\t'))
			he--;
		if ((size_t)(he - hs) >= sizeof(hop))
			return;
		memcpy(hop, hs, (size_t)(he - hs));
		hop[he - hs] = '\0';
		if (!is_ip(hop))
			return; /* the hop before it is the last one known */
		snprintf(out, outsz, "%s", hop);
		if (!config_trusted(cfg, hop))
			return;
		e = s > xff ? s - 1 : xff;
	}
}

enum client_verdict
clients_identify(const struct config *cfg, const char *authorization,
		 const char *api_key, const char *remote_addr,
		 const char *forwarded_for, struct client *out)
{
	unsigned char md[32];
	const char *tok;
	size_t n = 0;
	int match = -1;
	int i;
	char addr[ADDR_MAX];

	memset(out, 0, sizeof(*out));
	out->cl_limits.sc_rate = cfg->client_rate;
	out->cl_limits.sc_window_ms = cfg->client_window_ms;
	out->cl_limits.sc_concurrent = cfg->client_concurrent;
	out->cl_limits.sc_id = out->cl_id;
	if (!required) {
		clients_address(cfg, remote_addr, forwarded_for, addr,
				sizeof(addr));
		log_escape(addr, out->cl_name, sizeof(out->cl_name));
		client_id('a', addr, out->cl_id);
		return CLIENT_OK;
	}
	tok = bearer(authorization, &n);
	if (tok == NULL && api_key != NULL && api_key[0] != '\0') {
		tok = api_key;
		n = strlen(api_key);
	}
	if (tok == NULL)
		return CLIENT_NO_TOKEN;
	if (sha256(tok, n, md) != 0)
		return CLIENT_BAD_TOKEN;
	(void)pthread_rwlock_rdlock(&set_lock);
	/* Every entry compared, in constant time each: no early exit. */
	for (i = 0; i < cur.s_n; i++)
		if (CRYPTO_memcmp(md, cur.s_e[i].e_hash, 32) == 0 && match < 0)
			match = i;
	if (match >= 0) {
		const struct entry *e = &cur.s_e[match];

		snprintf(out->cl_name, sizeof(out->cl_name), "%s", e->e_name);
		if (e->e_rate >= 0) {
			out->cl_limits.sc_rate = e->e_rate;
			out->cl_limits.sc_window_ms = e->e_window_ms;
		}
		if (e->e_conc >= 0)
			out->cl_limits.sc_concurrent = e->e_conc;
	}
	(void)pthread_rwlock_unlock(&set_lock);
	explicit_bzero(md, sizeof(md));
	if (match < 0)
		return CLIENT_BAD_TOKEN;
	client_id('n', out->cl_name, out->cl_id);
	return CLIENT_OK;
}
