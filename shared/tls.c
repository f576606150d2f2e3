/*
 * tls.c - the shared CA store (see tls.h).
 */
#include "tls.h"

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
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

int
tls_store_init(const struct config *cfg, char *err, size_t errsz)
{
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
	const char *file = cfg->ca_file;

	if (v->ssl_version == NULL ||
	    strncmp(v->ssl_version, "OpenSSL/", 8) != 0)
		return 1;
	if (file == NULL)
		file = v->cainfo; /* libcurl's built-in bundle */
	shared_store = X509_STORE_new();
	if (shared_store == NULL) {
		snprintf(err, errsz, "out of memory");
		return -1;
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
		return -1;
	}
	/*
	 * The flags libcurl sets on a store it prepares: set here, once, so
	 * its own setting them again changes nothing in the shared store.
	 */
	X509_STORE_set_flags(shared_store, X509_V_FLAG_TRUSTED_FIRST |
						   X509_V_FLAG_PARTIAL_CHAIN);
	return 0;
}

CURLcode
tls_store_apply(CURL *c, const struct config *cfg)
{
	CURLcode rc;

	/*
	 * Debian's libcurl also has a built-in CA path, which turns its CA
	 * cache off and re-parses the store for every connection.
	 */
	rc = curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
	if (rc || shared_store == NULL)
		return rc || cfg->ca_file == NULL
			       ? rc
			       : curl_easy_setopt(c, CURLOPT_CAINFO,
						  cfg->ca_file);
	rc = curl_easy_setopt(c, CURLOPT_CAINFO, NULL);
	if (!rc)
		rc = curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION,
				      use_shared_store);
	return rc;
}

void
tls_store_free(void)
{
	X509_STORE_free(shared_store);
	shared_store = NULL;
}
