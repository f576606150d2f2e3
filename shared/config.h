/*
 * config.h - the one validated configuration, read from the environment.
 *
 * Only config.c reads the environment. config_load() fills struct config
 * from a lookup function (getenv in production, a table in tests); a bad
 * value fails with one line naming the variable and what is wrong, and
 * never showing a secret (the API keys, REDIS_URL and its password).
 */
#ifndef CP_CONFIG_H
#define CP_CONFIG_H

#include "util.h"

#include <stddef.h>
#include <stdio.h>

#define CONFIG_MAX_KEYS	   256
#define CONFIG_MAX_KEY_LEN 512

enum redis_kind {
	REDIS_TCP,
	REDIS_UNIX,
};

struct redis_addr {
	enum redis_kind ra_kind;
	char *ra_host;	   /* owned; REDIS_TCP */
	int ra_port;	   /* REDIS_TCP */
	char *ra_path;	   /* owned; REDIS_UNIX */
	char *ra_user;	   /* owned, may be NULL (ACL user) */
	char *ra_password; /* owned, may be NULL; secret */
	int ra_db;
};

/*
 * Cerebras' limits, in the order of headers.h's hdr_limit_names:
 * requests-minute, tokens-minute, requests-hour, tokens-hour,
 * requests-day, tokens-day (CEREBRAS_LIMITS names them rpm, tpm, rph,
 * tph, rpd, tpd).
 */
#define CONFIG_NLIMITS 6

/* One entry of TRUSTED_PROXIES: an address and prefix length. */
struct config_cidr {
	int cc_family;		   /* AF_INET or AF_INET6 */
	unsigned char cc_addr[16]; /* network order; 4 bytes for AF_INET */
	int cc_bits;		   /* prefix length */
};

#define CONFIG_MAX_TOKENS    4096
#define CONFIG_MIN_TOKEN_LEN 8
#define CONFIG_MAX_TOKEN_LEN 512

/* One entry of CEREBRAS_LIMITS: limits declared before any answer. */
struct declared_limits {
	char *dl_model;			  /* owned; NULL: every model */
	long long dl_cap[CONFIG_NLIMITS]; /* 0: not declared */
};

struct config {
	char **keys;	    /* owned; nkeys secrets, never logged */
	char (*key_fps)[9]; /* owned: key i's fingerprint, what logs show */
	int nkeys;
	/*
	 * Organisations: keys joined by '|' in CEREBRAS_API_KEYS share one
	 * organisation's budgets. key_org[i] is key i's organisation, 0 ..
	 * norgs-1, numbered in order of first appearance; org_fps[o] is
	 * organisation o's id in logs and Redis key names: the fingerprint
	 * of its keys joined by '|' in the order given.
	 */
	int *key_org;	    /* owned, nkeys entries */
	char (*org_fps)[9]; /* owned, norgs entries */
	int norgs;
	struct declared_limits *limits; /* owned: CEREBRAS_LIMITS entries */
	int nlimits;
	char *api_base;	       /* owned, no trailing '/' */
	char *chat_url;	       /* owned, api_base + "/chat/completions" */
	char *completions_url; /* owned, api_base + "/completions" */
	char *models_url;      /* owned, api_base + "/models" */
	char *ca_file;	       /* owned, NULL = libcurl's default store */
	char *redis_url; /* owned, as given (secret: may hold a password) */
	struct redis_addr redis;
	int redis_enabled;  /* 0: REDIS_URL=none, per-host scheduling only */
	int redis_fallback; /* REDIS_FALLBACK=local: per-host when it is down */
	char *redis_prefix; /* owned, holds a {hash tag} */
	long interval_ms;   /* slot spacing, 0 = none */
	int scope_per_key;  /* RATE_LIMIT_SCOPE=key: one timeline per key */
	long global_interval_ms; /* key scope: a floor across all keys */
	long queue_max_wait_ms;	 /* longer waits are refused with 429 */
	long max_attempts;	 /* upstream tries per request, >= 1 */
	long key_cooldown_ms;	 /* after a 429 that names no reset time */
	long key_disable_ms;	 /* after a 401/403 */
	long redis_timeout_ms;
	long connect_timeout_ms;
	long idle_timeout_ms; /* max upstream silence between two chunks */
	long first_byte_timeout_ms;  /* max wait for the answer's first byte */
	long default_max_completion; /* 0: unset; else added to bodies
					without a max (the only change) */
	long max_body_bytes;
	long threads;	  /* WORKER_THREADS: worker threads kept per process */
	long max_threads; /* WORKER_MAX_THREADS: the most a process grows to */
	long thread_idle_ms; /* WORKER_IDLE_TIMEOUT_MS: idle extra threads end */
	int threads_given;   /* either of the two above was set above 1 */
	long drain_timeout_ms; /* SIGTERM: how long running requests may finish */
	char *cors_origins;    /* owned: "*" or a comma-separated list */
	/* Client access (clients.h): PROXY_TOKENS, secrets, never logged. */
	char **tokens; /* owned, ntokens */
	int ntokens;
	char *tokens_file; /* owned: PROXY_TOKENS_FILE, NULL if unset */
	long client_rate;  /* CLIENT_RATE_LIMIT: requests per window, 0 none */
	long client_window_ms;	     /* its window */
	long client_concurrent;	     /* CLIENT_MAX_CONCURRENT, 0 none */
	struct config_cidr *trusted; /* owned: TRUSTED_PROXIES */
	int ntrusted;
	long models_cache_s; /* MODELS_CACHE_S: /v1/models kept this long */
	/* METRICS_ALLOW: who may GET /metrics (default loopback) */
	struct config_cidr *metrics_allow; /* owned */
	int nmetrics_allow;
	int log_requests;
	int log_json; /* LOG_FORMAT=json: one JSON object per line */
	/*
	 * systemd socket activation (sd_listen_fds(3)): LISTEN_PID and
	 * LISTEN_FDS as given, 0 when unset or not a number. Whether they
	 * are meant for this process is the front end's business.
	 */
	long listen_pid;
	long listen_fds;
};

/* Returns the value of name, or NULL if unset. */
typedef const char *(*config_lookup_fn)(const char *name, void *ctx);

/*
 * Fills c from lookup. Returns CP_OK; CP_ERR_CONFIG for a bad value, or
 * CP_ERR_NOMEM, each with a one-line message in err that starts with the
 * variable's name ("RATE_LIMIT_INTERVAL_MS: not a number: \"abc\"
 * (expected 0..3600000)"). On failure c holds nothing that needs freeing.
 */
enum cp_err config_load(struct config *c, config_lookup_fn lookup, void *ctx,
			char *err, size_t errsz);

/* config_load with the process environment. */
enum cp_err config_load_env(struct config *c, char *err, size_t errsz);

void config_free(struct config *c);

/*
 * The limits declared for model (CEREBRAS_LIMITS): the model's own entry
 * merged over the entry for every model; out[i] is 0 where nothing is
 * declared.
 */
void config_declared(const struct config *c, const char *model,
		     long long out[CONFIG_NLIMITS]);

/*
 * Parses a request rate "N/unit" (unit: s, sec, second, m, min, minute, h,
 * hour, d, day; N 1..1000000000), or "0" / "none" for no limit (n and
 * window 0). Returns 0, or -1 with *why set.
 */
int config_parse_rate(const char *s, long *n, long *window_ms,
		      const char **why);

/* The rate as config_parse_rate reads it ("60/min", or "none"). */
void config_rate_str(long n, long window_ms, char *out, size_t outsz);

/* 1 if the address ip (text) is within TRUSTED_PROXIES. */
int config_trusted(const struct config *c, const char *ip);

/* 1 if the address ip (text) is within METRICS_ALLOW. */
int config_metrics_allowed(const struct config *c, const char *ip);

/*
 * The process environment as a request's CGI variables (plain CGI mode):
 * a request_io io_param callback; ctx is unused.
 */
const char *config_cgi_param(void *ctx, const char *name);

/*
 * Prints the effective configuration for --check-config: one NAME=value
 * line for every setting config_load reads (not LISTEN_PID/LISTEN_FDS,
 * which systemd sets), secrets masked: the keys as their count, index
 * and fingerprint ("CEREBRAS_API_KEYS=2 keys: #0(1a2b3c4d) #1(...)"),
 * the Redis password (and user) as "***".
 */
void config_print(const struct config *c, FILE *fp);

/*
 * REDIS_URL as --check-config and the status command show it: the
 * password (and user) as three asterisks before the host ("redis:" "//"
 * "***@host:6379/0"), a unix socket's as " (password set)" after it;
 * "none (per-host scheduling only)" without Redis. Cut to outsz;
 * CONFIG_REDIS_STR_MAX holds any.
 */
#define CONFIG_REDIS_STR_MAX 4200
void config_redis_str(const struct config *c, char *out, size_t outsz);

/*
 * Parses a REDIS_URL value into a; exposed for tests. Returns CP_OK;
 * CP_ERR_CONFIG or CP_ERR_NOMEM with a "REDIS_URL: ..." message in err,
 * and a then holds nothing that needs freeing.
 */
enum cp_err config_parse_redis_url(const char *url, struct redis_addr *a,
				   char *err, size_t errsz);
void config_free_redis_addr(struct redis_addr *a);

#endif
