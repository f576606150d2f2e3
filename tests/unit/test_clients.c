/*
 * test_clients.c - client tokens, the tokens file's parser, who a request
 * comes from, and the rate and address settings they rely on (config.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "clients.h"
#include "config.h"

struct env {
	const char *name;
	const char *value;
};

static const char *
env_lookup(const char *name, void *ctx)
{
	const struct env *e = ctx;

	for (; e->name != NULL; e++)
		if (strcmp(e->name, name) == 0)
			return e->value;
	return NULL;
}

static void
load(struct config *c, const struct env *env)
{
	char err[256];

	err[0] = '\0';
	if (config_load(c, env_lookup, (void *)env, err, sizeof(err)) != CP_OK)
		fail_msg("config_load: %s", err);
	if (clients_init(c, err, sizeof(err)) != CP_OK)
		fail_msg("clients_init: %s", err);
}

static void
test_rate_parse(void **state)
{
	static const struct {
		const char *in;
		int ok;
		long n;
		long window_ms;
		const char *shown;
	} cases[] = {
		{"60/min", 1, 60, 60000, "60/min"},
		{"1/s", 1, 1, 1000, "1/s"},
		{"5/second", 1, 5, 1000, "5/s"},
		{"120/hour", 1, 120, 3600000, "120/hour"},
		{"1000/d", 1, 1000, 86400000, "1000/day"},
		{"none", 1, 0, 0, "none"},
		{"0", 1, 0, 0, "none"},
		{"60", 0, 0, 0, NULL},
		{"60/", 0, 0, 0, NULL},
		{"/min", 0, 0, 0, NULL},
		{"0/min", 0, 0, 0, NULL},
		{"-1/min", 0, 0, 0, NULL},
		{"60/fortnight", 0, 0, 0, NULL},
		{"99999999999999999999/min", 0, 0, 0, NULL},
		{"", 0, 0, 0, NULL},
	};
	const char *why;
	char shown[48];
	long n;
	long w;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		why = NULL;
		if ((config_parse_rate(cases[i].in, &n, &w, &why) == 0) !=
		    cases[i].ok)
			fail_msg("\"%s\": ok should be %d", cases[i].in,
				 cases[i].ok);
		if (!cases[i].ok) {
			assert_non_null(why);
			continue;
		}
		assert_int_equal(n, cases[i].n);
		assert_int_equal(w, cases[i].window_ms);
		config_rate_str(n, w, shown, sizeof(shown));
		assert_string_equal(shown, cases[i].shown);
	}
}

static void
test_trusted(void **state)
{
	static const struct env env[] = {
		{"CEREBRAS_API_KEYS", "k1"},
		{"TRUSTED_PROXIES",
		 "10.0.0.0/8, 192.168.1.0/25,::1, 2001:db8::/32"},
		{NULL, NULL},
	};
	static const struct {
		const char *ip;
		int trusted;
	} cases[] = {
		{"10.1.2.3", 1},      {"11.0.0.1", 0},
		{"192.168.1.127", 1}, {"192.168.1.128", 0},
		{"::1", 1},	      {"::2", 0},
		{"2001:db8:1::5", 1}, {"2001:db9::1", 0},
		{"not-an-ip", 0},     {"", 0},
		{"10.0.0.1 ", 0},
	};
	struct config c;
	size_t i;

	(void)state;
	load(&c, env);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (config_trusted(&c, cases[i].ip) != cases[i].trusted)
			fail_msg("%s: trusted should be %d", cases[i].ip,
				 cases[i].trusted);
	clients_free();
	config_free(&c);
}

static void
test_bad_settings(void **state)
{
	static const struct {
		const char *name;
		const char *value;
		const char *msg; /* the start of the error */
	} cases[] = {
		{"PROXY_TOKENS", "short", "PROXY_TOKENS: token #0 is not 8"},
		{"PROXY_TOKENS", "cp-long-enough, cp-long-enough",
		 "PROXY_TOKENS: token #1 repeats token #0"},
		{"PROXY_TOKENS", " , ", "PROXY_TOKENS: set but empty"},
		{"PROXY_TOKENS", "cp-with\x01ctl",
		 "PROXY_TOKENS: token #0 contains"},
		{"PROXY_TOKENS_FILE", "/nonexistent/tokens",
		 "PROXY_TOKENS_FILE: cannot read"},
		{"CLIENT_RATE_LIMIT", "lots",
		 "CLIENT_RATE_LIMIT: expected N/unit"},
		{"CLIENT_MAX_CONCURRENT", "-1", "CLIENT_MAX_CONCURRENT:"},
		{"TRUSTED_PROXIES", "10.0.0.0/33",
		 "TRUSTED_PROXIES: not an IP address or CIDR"},
		{"TRUSTED_PROXIES", "example.com",
		 "TRUSTED_PROXIES: not an IP address or CIDR"},
	};
	struct env env[3] = {
		{"CEREBRAS_API_KEYS", "k1"}, {NULL, NULL}, {NULL, NULL}};
	struct config c;
	char err[256];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		env[1].name = cases[i].name;
		env[1].value = cases[i].value;
		err[0] = '\0';
		if (config_load(&c, env_lookup, env, err, sizeof(err)) ==
		    CP_OK) {
			config_free(&c);
			fail_msg("%s=%s was accepted", cases[i].name,
				 cases[i].value);
		}
		if (strncmp(err, cases[i].msg, strlen(cases[i].msg)) != 0)
			fail_msg("%s: got \"%s\"", cases[i].name, err);
		/* A token never shows in its error. */
		if (strcmp(cases[i].name, "PROXY_TOKENS") == 0)
			assert_null(strstr(err, "cp-"));
	}
}

static void
test_file_parse(void **state)
{
	static const struct {
		const char *text;
		int n;		 /* clients, or -1: refused */
		const char *err; /* the error's start */
	} cases[] = {
		{"", 0, NULL},
		{"# only a comment\n\n   \n", 0, NULL},
		{"alice cp-alice-token\n", 1, NULL},
		{"alice cp-alice-token\r\nbob cp-bob-token-1 rate=5/min "
		 "concurrent=2\n",
		 2, NULL},
		{"  alice\tcp-alice-token\t rate=none concurrent=none", 1,
		 NULL},
		{"carol sha256:"
		 "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00"
		 "a08",
		 1, NULL},
		{"alice\n", -1, "line 1: client alice: no token"},
		{"al ice cp-alice-token", -1, "line 1: client al: the token"},
		{"al!ce cp-alice-token", -1, "line 1: the name may hold"},
		{"alice short", -1, "line 1: client alice: the token is not"},
		{"alice sha256:abc", -1, "line 1: client alice: sha256: needs"},
		{"alice sha256:"
		 "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00"
		 "aXY",
		 -1, "line 1: client alice: sha256: needs"},
		{"alice cp-alice-token rate=fast", -1, "line 1: rate:"},
		{"alice cp-alice-token speed=1", -1, "line 1: unknown option"},
		{"alice cp-alice-token concurrent=-1", -1,
		 "line 1: concurrent:"},
		{"# c\nalice cp-alice-token\nalice cp-other-token", -1,
		 "line 3: client alice is named twice"},
		{"alice cp-alice-token\nbob cp-alice-token", -1,
		 "line 2: client bob has the token of client alice"},
		{"alice cp-alice-\x01token", -1,
		 "line 1: client alice: the token"},
	};
	char err[256];
	int n;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		n = -2;
		if (clients_parse_check(cases[i].text, strlen(cases[i].text),
					&n, err, sizeof(err)) == CP_OK) {
			if (cases[i].n < 0)
				fail_msg("case %zu accepted", i);
			assert_int_equal(n, cases[i].n);
			continue;
		}
		if (cases[i].n >= 0)
			fail_msg("case %zu refused: %s", i, err);
		if (strncmp(err, cases[i].err, strlen(cases[i].err)) != 0)
			fail_msg("case %zu: got \"%s\"", i, err);
		/* The token never shows in the error. */
		assert_null(strstr(err, "cp-"));
	}
	/* A NUL byte in the middle. */
	assert_int_equal(clients_parse_check("a cp-aaaaaaaa\0b", 15, &n, err,
					     sizeof(err)),
			 CP_ERR_CONFIG);
}

static void
test_identify_tokens(void **state)
{
	static const char file[] = "alice cp-alice-token rate=7/min\n"
				   "bob sha256:"
				   "5c8f2b9e1e8e9f9c7e0e3b7d9f1a6c2e5d4b3a2918"
				   "07f6e5d4c3b2a1908f7e6d\n";
	char path[] = "/tmp/test_clients_XXXXXX";
	struct env env[] = {
		{"CEREBRAS_API_KEYS", "k1"},
		{"PROXY_TOKENS", "cp-env-token-0"},
		{"PROXY_TOKENS_FILE", path},
		{"CLIENT_RATE_LIMIT", "60/min"},
		{"CLIENT_MAX_CONCURRENT", "4"},
		{NULL, NULL},
	};
	struct config c;
	struct client cl;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, file, sizeof(file) - 1),
			 (ssize_t)(sizeof(file) - 1));
	close(fd);
	load(&c, env);
	assert_int_equal(clients_required(), 1);
	assert_int_equal(clients_count(), 3);

	assert_int_equal(clients_identify(&c, NULL, NULL, "1.2.3.4", NULL, &cl),
			 CLIENT_NO_TOKEN);
	assert_int_equal(clients_identify(&c, "Bearer cp-nobody-token", NULL,
					  NULL, NULL, &cl),
			 CLIENT_BAD_TOKEN);
	assert_int_equal(clients_identify(&c, "Basic cp-alice-token", NULL,
					  NULL, NULL, &cl),
			 CLIENT_NO_TOKEN);
	assert_int_equal(clients_identify(&c, "Bearer cp-env-token-0", NULL,
					  NULL, NULL, &cl),
			 CLIENT_OK);
	assert_string_equal(cl.cl_name, "token#0");
	assert_int_equal(cl.cl_limits.sc_rate, 60);
	assert_int_equal(cl.cl_limits.sc_concurrent, 4);
	assert_int_equal(strlen(cl.cl_id), 16);
	assert_ptr_equal(cl.cl_limits.sc_id, cl.cl_id);

	assert_int_equal(clients_identify(&c, "bearer   cp-alice-token  ", NULL,
					  NULL, NULL, &cl),
			 CLIENT_OK);
	assert_string_equal(cl.cl_name, "alice");
	assert_int_equal(cl.cl_limits.sc_rate, 7);
	assert_int_equal(cl.cl_limits.sc_window_ms, 60000);
	assert_int_equal(cl.cl_limits.sc_concurrent, 4);
	/* x-api-key when there is no Bearer. */
	assert_int_equal(
		clients_identify(&c, NULL, "cp-alice-token", NULL, NULL, &cl),
		CLIENT_OK);
	assert_string_equal(cl.cl_name, "alice");
	/* A prefix or an extension of a token is no token. */
	assert_int_equal(clients_identify(&c, "Bearer cp-alice-toke", NULL,
					  NULL, NULL, &cl),
			 CLIENT_BAD_TOKEN);
	assert_int_equal(clients_identify(&c, "Bearer cp-alice-tokenX", NULL,
					  NULL, NULL, &cl),
			 CLIENT_BAD_TOKEN);
	clients_free();
	config_free(&c);
	unlink(path);
}

static void
test_identify_addresses(void **state)
{
	static const struct env env[] = {
		{"CEREBRAS_API_KEYS", "k1"},
		{"TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/8"},
		{NULL, NULL},
	};
	static const struct {
		const char *remote;
		const char *xff;
		const char *client;
	} cases[] = {
		{"203.0.113.7", NULL, "203.0.113.7"},
		/* not from a trusted proxy: the header is ignored */
		{"203.0.113.7", "198.51.100.1", "203.0.113.7"},
		{"127.0.0.1", NULL, "127.0.0.1"},
		{"127.0.0.1", "198.51.100.1", "198.51.100.1"},
		/* the right-most hop not trusted */
		{"127.0.0.1", "1.1.1.1, 198.51.100.1, 10.2.3.4",
		 "198.51.100.1"},
		/* all trusted: the left-most */
		{"127.0.0.1", "10.0.0.9, 10.0.0.8", "10.0.0.9"},
		/* garbage stops the walk at the last address known */
		{"127.0.0.1", "198.51.100.1, garbage", "127.0.0.1"},
		{"127.0.0.1", "1.1.1.1, x, 10.0.0.5", "10.0.0.5"},
		{NULL, "198.51.100.1", "-"},
		{"127.0.0.1", "::ffff:1.2.3.4", "::ffff:1.2.3.4"},
	};
	struct config c;
	struct client cl;
	char id[17];
	size_t i;

	(void)state;
	load(&c, env);
	assert_int_equal(clients_required(), 0);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(clients_identify(&c, "Bearer whatever", NULL,
						  cases[i].remote, cases[i].xff,
						  &cl),
				 CLIENT_OK);
		if (strcmp(cl.cl_name, cases[i].client) != 0)
			fail_msg("case %zu: client %s, want %s", i, cl.cl_name,
				 cases[i].client);
		assert_int_equal(cl.cl_limits.sc_rate, 0);
	}
	/* One address, one id; another, another. */
	assert_int_equal(
		clients_identify(&c, NULL, NULL, "203.0.113.7", NULL, &cl),
		CLIENT_OK);
	memcpy(id, cl.cl_id, sizeof(id));
	assert_int_equal(
		clients_identify(&c, NULL, NULL, "203.0.113.7", NULL, &cl),
		CLIENT_OK);
	assert_string_equal(id, cl.cl_id);
	assert_int_equal(
		clients_identify(&c, NULL, NULL, "203.0.113.8", NULL, &cl),
		CLIENT_OK);
	assert_string_not_equal(id, cl.cl_id);
	clients_free();
	config_free(&c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rate_parse),
		cmocka_unit_test(test_trusted),
		cmocka_unit_test(test_bad_settings),
		cmocka_unit_test(test_file_parse),
		cmocka_unit_test(test_identify_tokens),
		cmocka_unit_test(test_identify_addresses),
	};

	return cmocka_run_group_tests_name("test_clients", tests, NULL, NULL);
}
