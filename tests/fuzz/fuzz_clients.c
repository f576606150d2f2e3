/*
 * fuzz_clients.c - who a request comes from (shared/clients.c): the
 * tokens file parser, and clients_identify() over a request's
 * Authorization, x-api-key, REMOTE_ADDR and X-Forwarded-For.
 *
 * Input: byte 0 picks the configuration (bit 0: client tokens required,
 * else an open proxy behind TRUSTED_PROXIES); the rest is, whole, a
 * tokens file for clients_parse_check(), and, split at '\n', the four
 * headers (a field that is the single byte 0x01, or a missing one, is
 * absent). An identified client has a printable name and a 16-hex-digit
 * id; an open proxy identifies every request.
 */
#include "fuzz.h"

#include "clients.h"
#include "config.h"

#include <ctype.h>

static const char *const env_open[] = {
	"CEREBRAS_API_KEYS",
	"csk-fuzz0001",
	"TRUSTED_PROXIES",
	"127.0.0.1,10.0.0.0/8,::1,fd00::/8",
	"CLIENT_RATE_LIMIT",
	"60/minute",
	NULL,
};

static const char *const env_tokens[] = {
	"CEREBRAS_API_KEYS",
	"csk-fuzz0001",
	"PROXY_TOKENS",
	"sk-proxy-aaaaaaaa0001,sk-proxy-bbbbbbbb0002",
	"CLIENT_MAX_CONCURRENT",
	"4",
	NULL,
};

static const char *
lookup(const char *name, void *ctx)
{
	const char *const *e = ctx;
	size_t i;

	for (i = 0; e[i] != NULL; i += 2)
		if (strcmp(e[i], name) == 0)
			return e[i + 1];
	return NULL;
}

static struct config cfgs[2];

/* Loads configuration which (once) and makes it the clients' one. */
static const struct config *
use(int which)
{
	static int loaded[2];
	static int current = -1;
	char err[256];

	if (!loaded[which]) {
		if (config_load(&cfgs[which], lookup,
				(void *)(which ? env_tokens : env_open), err,
				sizeof(err)) != CP_OK)
			fuzz_fail("config: %s", err);
		loaded[which] = 1;
	}
	if (current != which) {
		if (clients_init(&cfgs[which], err, sizeof(err)) != CP_OK)
			fuzz_fail("clients_init: %s", err);
		current = which;
	}
	return &cfgs[which];
}

static const char *
hdr(char *f)
{
	if (f == NULL || (f[0] == '\x01' && f[1] == '\0'))
		return NULL;
	return f;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct config *cfg;
	struct client cl;
	enum client_verdict v;
	char err[256];
	char *text;
	char *f[4];
	size_t n;
	size_t i;
	int count;

	if (size < 1)
		return 0;
	cfg = use(data[0] & 1);
	text = fuzz_memdup(data + 1, size - 1);
	err[0] = '\0';
	if (clients_parse_check(text, size - 1, &count, err, sizeof(err)) !=
		    CP_OK &&
	    err[0] == '\0')
		fuzz_fail("a tokens file refused without a reason");
	if (strpbrk(err, "\r\n") != NULL)
		fuzz_fail("a reason of more than one line: \"%s\"", err);
	free(text);

	n = fuzz_fields(data + 1, size - 1, f, 4);
	memset(&cl, 0x5a, sizeof(cl));
	v = clients_identify(cfg, hdr(f[0]), hdr(f[1]), hdr(f[2]), hdr(f[3]),
			     &cl);
	if (!(data[0] & 1) && v != CLIENT_OK)
		fuzz_fail("an open proxy refused a client");
	if (v == CLIENT_OK) {
		if (strnlen(cl.cl_name, sizeof(cl.cl_name)) >=
		    sizeof(cl.cl_name))
			fuzz_fail("client name not terminated");
		for (i = 0; cl.cl_name[i] != '\0'; i++)
			if ((unsigned char)cl.cl_name[i] < 0x20 ||
			    (unsigned char)cl.cl_name[i] >= 0x7f)
				fuzz_fail("a control byte in a client name");
		if (strlen(cl.cl_id) != 16)
			fuzz_fail("client id not 16 digits");
		for (i = 0; i < 16; i++)
			if (!isxdigit((unsigned char)cl.cl_id[i]))
				fuzz_fail("client id not hex");
	}
	fuzz_free_fields(f, n);
	return 0;
}
