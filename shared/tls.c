/*
 * tls.c - the shared CA store (see tls.h).
 */
#include "tls.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

static X509_STORE *shared_store; /* set once, before any thread starts */

/* libcurl calls this for each new connection's SSL_CTX. */
static CURLcode
use_shared_store(CURL *c, void *ssl_ctx, void *arg)
{
	(void)c;
	(void)arg;
	/* set1: the SSL_CTX takes its own reference. */
	SSL_CTX_set1_cert_store(ssl_ctx, shared_store);
	return CURLE_OK;
}

/*
 * OpenSSL fills some caches of a certificate on first use (its decoded
 * extensions, the canonical form of its names), and one thread may fill
 * them while another reads (ThreadSanitizer showed it). Filling them all
 * now, before any thread exists, leaves the threads only reading.
 */
static void
settle_store(X509_STORE *store)
{
	STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(store);
	X509 *x;
	int i;

	for (i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
		if (x == NULL)
			continue;
		(void)X509_check_purpose(x, -1, 0);
		(void)X509_NAME_hash_ex(X509_get_subject_name(x), NULL, NULL,
					NULL);
		(void)X509_NAME_hash_ex(X509_get_issuer_name(x), NULL, NULL,
					NULL);
	}
}

enum cp_err
tls_store_init(const struct config *cfg, char *err, size_t errsz)
{
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
	const char *file = cfg->ca_file;

	if (v->ssl_version == NULL ||
	    strncmp(v->ssl_version, "OpenSSL/", 8) != 0)
		return CP_OK; /* no shared store: see tls_store_shared */
	if (file == NULL)
		file = v->cainfo; /* libcurl's built-in bundle */
	shared_store = X509_STORE_new();
	if (shared_store == NULL) {
		snprintf(err, errsz, "out of memory");
		return CP_ERR_NOMEM;
	}
	if (file != NULL ? X509_STORE_load_file(shared_store, file) != 1
			 : X509_STORE_set_default_paths(shared_store) != 1) {
		if (cfg->ca_file != NULL)
			snprintf(err, errsz,
				 "CEREBRAS_CA_FILE: no PEM CA certificates "
				 "could be loaded from %s",
				 file);
		else
			snprintf(
				err, errsz,
				"CEREBRAS_CA_FILE: not set, and the default CA "
				"bundle (%s) cannot be loaded",
				file != NULL ? file
					     : "OpenSSL's default paths");
		tls_store_free();
		return CP_ERR_CONFIG;
	}
	settle_store(shared_store);
	/*
	 * The flags libcurl sets on a store it prepares: set here, once, so
	 * its own setting them again changes nothing in the shared store.
	 */
	X509_STORE_set_flags(shared_store, X509_V_FLAG_TRUSTED_FIRST |
						   X509_V_FLAG_PARTIAL_CHAIN);
	return CP_OK;
}

int
tls_store_shared(void)
{
	return shared_store != NULL;
}

/* A curl_easy_setopt result, with the option named in err on failure. */
static enum cp_err
setopt_result(CURLcode rc, const char *name, char *err, size_t errsz)
{
	if (rc == CURLE_OK)
		return CP_OK;
	snprintf(err, errsz, "libcurl setup: %s: %s", name,
		 curl_easy_strerror(rc));
	return CP_ERR_CURL_SETUP;
}

#define SETOPT(c, opt, val, err, errsz)                                        \
	setopt_result(curl_easy_setopt(c, opt, val), #opt, err, errsz)

enum cp_err
tls_store_apply(CURL *c, const struct config *cfg, char *err, size_t errsz)
{
	enum cp_err e;

	/*
	 * Debian's libcurl also has a built-in CA path, which turns its CA
	 * cache off and re-parses the store for every connection.
	 */
	e = SETOPT(c, CURLOPT_CAPATH, NULL, err, errsz);
	if (e)
		return e;
	if (shared_store == NULL) /* libcurl loads cfg->ca_file itself */
		return cfg->ca_file == NULL ? CP_OK
					    : SETOPT(c, CURLOPT_CAINFO,
						     cfg->ca_file, err, errsz);
	e = SETOPT(c, CURLOPT_CAINFO, NULL, err, errsz);
	if (e)
		return e;
	return SETOPT(c, CURLOPT_SSL_CTX_FUNCTION, use_shared_store, err,
		      errsz);
}

void
tls_store_free(void)
{
	X509_STORE_free(shared_store);
	shared_store = NULL;
}
