/*
 * tls.h - one CA store per process for every upstream TLS connection.
 *
 * libcurl (OpenSSL backend) keeps its parsed CA store per multi handle, so
 * each worker thread would parse and hold its own copy of the CA bundle:
 * about 0.7 MiB per thread with Debian's system bundle. Instead the
 * bundle is parsed once, before the workers fork, and every connection's
 * SSL_CTX is pointed at that one store from libcurl's SSL_CTX callback;
 * libcurl itself is given no CA file or path, so it loads nothing. Peer
 * and host name verification stay libcurl's.
 */
#ifndef CP_TLS_H
#define CP_TLS_H

#include "config.h"
#include "util.h"

#include <curl/curl.h>
#include <stddef.h>

/*
 * Parses cfg->ca_file, or libcurl's default bundle, into the shared store.
 * Returns CP_OK, also when libcurl is not built on OpenSSL (then there is
 * no shared store and every handle loads the CA file itself, as libcurl
 * does by default: see tls_store_shared); CP_ERR_CONFIG with a one-line
 * reason in err if the file cannot be loaded; CP_ERR_NOMEM.
 * Call once, before any thread starts.
 */
enum cp_err tls_store_init(const struct config *cfg, char *err, size_t errsz);

/* Returns 1 if tls_store_init made a shared store, 0 if not. */
int tls_store_shared(void);

/*
 * Sets c up to verify the upstream against the shared store, or, without
 * one, against cfg->ca_file (NULL: libcurl's default bundle). Returns
 * CP_OK, or CP_ERR_CURL_SETUP with "libcurl setup: <option>: <reason>" in
 * err if libcurl refused an option.
 */
enum cp_err tls_store_apply(CURL *c, const struct config *cfg, char *err,
			    size_t errsz);

void tls_store_free(void);

#endif
