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

#include <curl/curl.h>
#include <stddef.h>

/*
 * Parses cfg->ca_file, or libcurl's default bundle, into the shared store.
 * Returns 0; 1 if libcurl is not built on OpenSSL (then every handle loads
 * the CA file itself, as libcurl does by default); -1 with a one-line
 * reason in err if the file cannot be loaded.
 */
int tls_store_init(const struct config *cfg, char *err, size_t errsz);

/*
 * Sets c up to verify the upstream against the shared store, or, without
 * one, against cfg->ca_file (NULL: libcurl's default bundle).
 */
CURLcode tls_store_apply(CURL *c, const struct config *cfg);

void tls_store_free(void);

#endif
