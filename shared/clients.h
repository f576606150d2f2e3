/*
 * clients.h - who a request comes from, and whether it may spend.
 *
 * With client tokens configured (PROXY_TOKENS, PROXY_TOKENS_FILE) a chat
 * request must carry one, as "Authorization: Bearer <token>" (what the
 * OpenAI and Cerebras SDKs send as their API key) or "x-api-key:
 * <token>"; the client is then the token's name. Without tokens the proxy
 * is open and a client is its address: REMOTE_ADDR, or the X-Forwarded-For
 * hop the TRUSTED_PROXIES name (the right-most address not among them).
 *
 * Tokens are kept only as SHA-256 digests (the file may give the digest,
 * "sha256:<hex>", instead of the token), compared in constant time, and
 * never logged: a client appears by name. The tokens file:
 *
 *   # name   token or sha256:<64 hex>   [rate=N/unit|none] [concurrent=N]
 *   alice    sk-proxy-2f9c0e1d7a        rate=30/min concurrent=4
 *   batch    sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
 *
 * is read at start (a bad file stops the program, naming the line) and
 * again on SIGHUP or when it changes (checked at most once a second, on
 * a request): a bad new file is logged and the old set kept. Requests
 * are never dropped by a reload.
 *
 * The limits (CLIENT_RATE_LIMIT, CLIENT_MAX_CONCURRENT, or the client's
 * own) are kept by the scheduler (sched.h), keyed by an opaque id: 16 hex
 * digits of SHA-256 over the client's name or address.
 */
#ifndef CP_CLIENTS_H
#define CP_CLIENTS_H

#include "config.h"
#include "slot.h"
#include "util.h"

#include <stddef.h>

#define CLIENT_NAME_MAX 64

/* A request's client, as clients_identify found it. */
struct client {
	char cl_name[CLIENT_NAME_MAX + 1]; /* the token's name, or address */
	char cl_id[17];			   /* what the scheduler keys by */
	struct sched_client cl_limits;	   /* sc_id points at cl_id */
};

enum client_verdict {
	CLIENT_OK,	  /* identified (or the proxy is open) */
	CLIENT_NO_TOKEN,  /* tokens are required, none was sent */
	CLIENT_BAD_TOKEN, /* one was sent, and it is no client's */
};

/*
 * Loads the tokens (PROXY_TOKENS, then PROXY_TOKENS_FILE) for this
 * process. CP_ERR_CONFIG with a one-line "PROXY_TOKENS_FILE: line N: ..."
 * in err for a bad file.
 */
enum cp_err clients_init(const struct config *cfg, char *err, size_t errsz);
void clients_free(void);

/* 1 when tokens are required (any configured). */
int clients_required(void);

/* The number of clients known now (tokens, file entries). */
int clients_count(void);

/* Asks for the tokens file to be read again; async-signal-safe. */
void clients_request_reload(void);

/*
 * Reads the tokens file again if a reload was asked for or the file
 * changed (looked at no more than once a second). Thread-safe; cheap
 * when nothing changed.
 */
void clients_maybe_reload(const struct config *cfg);

/*
 * Finds the request's client from its Authorization and x-api-key
 * headers (either may be NULL) or, the proxy open, from remote_addr and
 * forwarded_for (X-Forwarded-For). Fills out (its limits from cfg's
 * defaults or the client's own line).
 */
enum client_verdict
clients_identify(const struct config *cfg, const char *authorization,
		 const char *api_key, const char *remote_addr,
		 const char *forwarded_for, struct client *out);

/*
 * The client's address: remote (REMOTE_ADDR), or, when that is in
 * TRUSTED_PROXIES, the right-most hop of xff (X-Forwarded-For, may be
 * NULL) that is not; "-" when remote is missing or too long for out.
 */
void clients_address(const struct config *cfg, const char *remote,
		     const char *xff, char *out, size_t outsz);

/*
 * Parses a tokens file's text (exposed for tests and fuzzing): the
 * number of clients in *n, or CP_ERR_CONFIG with "line N: ..." in err.
 */
enum cp_err clients_parse_check(const char *text, size_t len, int *n, char *err,
				size_t errsz);

#endif
