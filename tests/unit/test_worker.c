/*
 * test_worker.c - setting a worker up and tearing it down: every failure
 * says what failed and leaves nothing behind.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "unit.h"

static char prefix[64];

static const char *
lookup(const char *name, void *ctx)
{
	(void)ctx;
	if (strcmp(name, "CEREBRAS_API_KEYS") == 0)
		return "sk-unit-1,sk-unit-2";
	if (strcmp(name, "REDIS_URL") == 0)
		return "none";
	if (strcmp(name, "REDIS_PREFIX") == 0)
		return prefix;
	return NULL;
}

/* Mappings of per-host scheduler state in this process. */
static int
state_mappings(void)
{
	FILE *fp = fopen("/proc/self/maps", "r");
	char line[512];
	int n = 0;

	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp) != NULL)
		if (strstr(line, "/cerebras-proxy-") != NULL)
			n++;
	fclose(fp);
	return n;
}

static void
load(struct config *cfg)
{
	char err[256];

	snprintf(prefix, sizeof(prefix), "{unit-worker-%ld}", (long)getpid());
	if (config_load(cfg, lookup, NULL, err, sizeof(err)) != 0)
		fail_msg("config_load: %s", err);
}

static void
forget(struct config *cfg)
{
	char name[64];

	sched_local_name(cfg, name, sizeof(name));
	(void)shm_unlink(name);
	config_free(cfg);
}

static void
test_init_and_free(void **state)
{
	struct config cfg;
	struct worker w;
	char errbuf[256];
	int before;

	(void)state;
	load(&cfg);
	before = state_mappings();
	assert_int_equal(worker_init(&w, &cfg, errbuf, sizeof(errbuf)), CP_OK);
	assert_int_equal(state_mappings(), before + 1);
	worker_free(&w);
	assert_int_equal(state_mappings(), before);
	forget(&cfg);
}

/*
 * Regression: when libcurl refuses an option, worker_init fails with
 * CP_ERR_CURL_SETUP (not "out of memory"), says which, and unmaps the
 * per-host state it had mapped (it used to leak the mapping). libcurl
 * refuses a URL over CURL_MAX_INPUT_LENGTH (8 MB).
 */
static void
test_curl_refusal_leaves_nothing(void **state)
{
	struct config cfg;
	struct worker w;
	char errbuf[256];
	size_t n = 9 * 1024 * 1024;
	int before;

	(void)state;
	load(&cfg);
	free(cfg.chat_url);
	cfg.chat_url = malloc(n + 1);
	assert_non_null(cfg.chat_url);
	memset(cfg.chat_url, 'a', n);
	memcpy(cfg.chat_url, "https://", 8);
	cfg.chat_url[n] = '\0';
	before = state_mappings();
	errbuf[0] = '\0';
	assert_int_equal(worker_init(&w, &cfg, errbuf, sizeof(errbuf)),
			 CP_ERR_CURL_SETUP);
	assert_non_null(strstr(errbuf, "libcurl"));
	assert_int_equal(state_mappings(), before);
	forget(&cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_and_free),
		cmocka_unit_test(test_curl_refusal_leaves_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
