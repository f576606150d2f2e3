/*
 * test_tls.c - the shared CA store: tls_store_init's results and messages,
 * tls_store_shared, and tls_store_apply on a real libcurl handle.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"

/* Debian's bundle (package ca-certificates), if installed. */
static char system_bundle[] = "/etc/ssl/certs/ca-certificates.crt";

static int
libcurl_is_openssl(void)
{
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);

	return v->ssl_version != NULL &&
	       strncmp(v->ssl_version, "OpenSSL/", 8) == 0;
}

/* A readable file with no certificate in it: CP_ERR_CONFIG, no store. */
static void
test_tls_no_certificates(void **state)
{
	char path[] = "/tmp/test_tls_ca.XXXXXX";
	struct config cfg;
	char err[256];
	int fd;

	(void)state;
	if (!libcurl_is_openssl())
		skip();
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "not a certificate\n", 18), 18);
	close(fd);
	memset(&cfg, 0, sizeof(cfg));
	cfg.ca_file = path;
	err[0] = '\0';
	assert_int_equal(tls_store_init(&cfg, err, sizeof(err)), CP_ERR_CONFIG);
	if (strncmp(err, "CEREBRAS_CA_FILE: no PEM CA certificates", 40) != 0 ||
	    strstr(err, path) == NULL)
		fail_msg("message \"%s\"", err);
	assert_int_equal(tls_store_shared(), 0);
	unlink(path);
}

/* A real bundle: one shared store, which tls_store_apply installs. */
static void
test_tls_shared_store(void **state)
{
	struct config cfg;
	char err[256];
	CURL *c;

	(void)state;
	if (access(system_bundle, R_OK) != 0)
		skip();
	memset(&cfg, 0, sizeof(cfg));
	cfg.ca_file = system_bundle;
	assert_int_equal(tls_store_init(&cfg, err, sizeof(err)), CP_OK);
	assert_int_equal(tls_store_shared(), libcurl_is_openssl());
	c = curl_easy_init();
	assert_non_null(c);
	assert_int_equal(tls_store_apply(c, &cfg, err, sizeof(err)), CP_OK);
	curl_easy_cleanup(c);
	tls_store_free();
	assert_int_equal(tls_store_shared(), 0);
}

/* Without a shared store libcurl is given the CA file itself. */
static void
test_tls_apply_without_store(void **state)
{
	struct config cfg;
	char err[256];
	CURL *c;

	(void)state;
	memset(&cfg, 0, sizeof(cfg));
	assert_int_equal(tls_store_shared(), 0);
	c = curl_easy_init();
	assert_non_null(c);
	assert_int_equal(tls_store_apply(c, &cfg, err, sizeof(err)), CP_OK);
	cfg.ca_file = system_bundle;
	assert_int_equal(tls_store_apply(c, &cfg, err, sizeof(err)), CP_OK);
	curl_easy_cleanup(c);
}

static int
teardown(void **state)
{
	(void)state;
	curl_global_cleanup();
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tls_no_certificates),
		cmocka_unit_test(test_tls_shared_store),
		cmocka_unit_test(test_tls_apply_without_store),
	};

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return 1;
	return cmocka_run_group_tests_name("test_tls", tests, NULL, teardown);
}
