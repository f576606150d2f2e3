/*
 * test_log.c - the log line format: "cerebras-proxy[PID]: LEVEL: MESSAGE",
 * one write(2) per line, errno kept, no line break or control character
 * in a message, log_escape. stderr is pointed at one end of a
 * SOCK_SEQPACKET socket pair, where each write(2) arrives as one packet.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "unit.h"

/* stderr redirected to cap_fds[0]; packets read from cap_fds[1]. */
static int cap_fds[2] = {-1, -1};
static int saved_stderr = -1;

static void
capture_start(void)
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, cap_fds), 0);
	saved_stderr = dup(STDERR_FILENO);
	assert_true(saved_stderr >= 0);
	assert_int_equal(dup2(cap_fds[0], STDERR_FILENO), STDERR_FILENO);
}

/*
 * Restores stderr and returns the one packet written meanwhile in buf
 * (NUL-terminated); fails if there were none or more than one.
 */
static size_t
capture_end(char *buf, size_t bufsz)
{
	ssize_t n;
	ssize_t more;
	char extra[16];

	assert_int_equal(dup2(saved_stderr, STDERR_FILENO), STDERR_FILENO);
	close(saved_stderr);
	close(cap_fds[0]);
	n = recv(cap_fds[1], buf, bufsz - 1, MSG_DONTWAIT);
	more = recv(cap_fds[1], extra, sizeof(extra), MSG_DONTWAIT);
	close(cap_fds[1]);
	if (n <= 0)
		fail_msg("nothing written to stderr");
	if (more > 0)
		fail_msg("more than one write(2) for one line");
	buf[n] = '\0';
	return (size_t)n;
}

enum logger {
	INFO,
	WARN,
	WARNX,
	ERR,
	ERRX,
};

struct log_case {
	enum logger fn;
	int errnum;	   /* errno before the call */
	const char *msg;   /* logged with "%s" */
	const char *level; /* in the line */
	int with_errno;	   /* ": strerror(errnum)" appended */
};

static const struct log_case log_cases[] = {
	{INFO, 0, "Initialized with 3 API keys.", "info", 0},
	{INFO, ENOENT, "chat id=x status=200", "info", 0},
	{WARN, ENOENT, "--listen: cannot remove stale /run/x", "warning", 1},
	{WARNX, EACCES, "Redis reserve unavailable", "warning", 0},
	{ERR, EADDRINUSE, "--listen: bind /run/x.sock", "error", 1},
	{ERRX, EINTR, "worker setup failed: Redis", "error", 0},
	{WARNX, 0, "", "warning", 0},
	{INFO, 0, "100% of \"it\"", "info", 0},
};

static void
call_logger(enum logger fn, const char *msg)
{
	switch (fn) {
	case INFO: log_info("%s", msg); break;
	case WARN: log_warn("%s", msg); break;
	case WARNX: log_warnx("%s", msg); break;
	case ERR: log_err("%s", msg); break;
	case ERRX: log_errx("%s", msg); break;
	}
}

static void
test_log_levels(void **state)
{
	char got[2048];
	char want[2048];
	size_t i;
	int after;

	(void)state;
	for (i = 0; i < NELEM(log_cases); i++) {
		const struct log_case *t = &log_cases[i];

		snprintf(want, sizeof(want),
			 "cerebras-proxy[%ld]: %s: %s%s%s\n", (long)getpid(),
			 t->level, t->msg, t->with_errno ? ": " : "",
			 t->with_errno ? strerror(t->errnum) : "");
		capture_start();
		errno = t->errnum;
		call_logger(t->fn, t->msg);
		after = errno;
		capture_end(got, sizeof(got));
		if (strcmp(got, want) != 0)
			fail_msg("row %zu: got \"%s\", want \"%s\"", i, got,
				 want);
		if (after != t->errnum)
			fail_msg("row %zu: errno %d after the call, was %d", i,
				 after, t->errnum);
	}
}

/* Format arguments reach the line. */
static void
test_log_format_args(void **state)
{
	char got[2048];
	char want[256];

	(void)state;
	snprintf(want, sizeof(want),
		 "cerebras-proxy[%ld]: warning: API key #%d (%s) refused\n",
		 (long)getpid(), 2, "1a2b3c4d");
	capture_start();
	log_warnx("API key #%d (%s) refused", 2, "1a2b3c4d");
	capture_end(got, sizeof(got));
	assert_string_equal(got, want);
}

/* A long message is cut to 1023 bytes, still one line ending in '\n'. */
static void
test_log_long_line(void **state)
{
	char msg[3000];
	char got[4096];
	char prefix[64];
	size_t n;
	int k;

	(void)state;
	memset(msg, 'x', sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = '\0';
	for (k = 0; k < 2; k++) {
		capture_start();
		errno = ENOENT;
		if (k == 0)
			log_info("%s", msg);
		else
			log_warn("%s", msg); /* no room for strerror */
		n = capture_end(got, sizeof(got));
		assert_int_equal(n, 1023);
		assert_int_equal(got[n - 1], '\n');
		assert_ptr_equal(strchr(got, '\n'), got + n - 1);
		snprintf(prefix, sizeof(prefix), "cerebras-proxy[%ld]: %s: xxx",
			 (long)getpid(), k == 0 ? "info" : "warning");
		assert_memory_equal(got, prefix, strlen(prefix));
	}
}

/*
 * The writer neutralises what would break or forge a line, whatever the
 * caller passed: a value logged without log_escape cannot end the line.
 */
struct inject_case {
	const char *msg;  /* logged with "id=%s" */
	const char *want; /* the message part of the line */
};

static const struct inject_case inject_cases[] = {
	{"abc", "id=abc"},
	{"a\nb", "id=a\\x0ab"},
	{"a\r\ncerebras-proxy[1]: error: forged",
	 "id=a\\x0d\\x0acerebras-proxy[1]: error: forged"},
	{"\x1b[31mred\x1b[0m", "id=\\x1b[31mred\\x1b[0m"},
	{"tab\there", "id=tab\\x09here"},
	{"del\x7f"
	 "end",
	 "id=del\\x7fend"},
	/* U+2028 LINE SEPARATOR, U+0085 NEL, a bare C1 CSI byte. */
	{"ls\xe2\x80\xa8"
	 "nel\xc2\x85"
	 "csi\x9b",
	 "id=ls\\xe2\\x80\\xa8nel\\xc2\\x85csi\\x9b"},
	/* Quotes and backslashes stay: log_escape'd values are not doubled. */
	{"\"q\" \\x0a", "id=\"q\" \\x0a"},
};

static void
test_log_neutralises(void **state)
{
	char got[2048];
	char want[2048];
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(inject_cases); i++) {
		snprintf(want, sizeof(want), "cerebras-proxy[%ld]: info: %s\n",
			 (long)getpid(), inject_cases[i].want);
		capture_start();
		log_info("id=%s", inject_cases[i].msg);
		capture_end(got, sizeof(got));
		if (strcmp(got, want) != 0)
			fail_msg("row %zu: got \"%s\", want \"%s\"", i, got,
				 want);
	}
}

/*
 * A message of line breaks is cut to 1023 bytes like any other, and never
 * in the middle of an escape; strerror is neutralised too (log_warn).
 */
static void
test_log_neutralise_cut(void **state)
{
	char msg[1000];
	char got[4096];
	size_t n;
	size_t i;
	char *body;

	(void)state;
	memset(msg, '\n', sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = '\0';
	capture_start();
	errno = ENOENT;
	log_warn("%s", msg);
	n = capture_end(got, sizeof(got));
	assert_true(n <= 1023);
	assert_true(n > 1023 - 4);
	assert_int_equal(got[n - 1], '\n');
	assert_ptr_equal(strchr(got, '\n'), got + n - 1);
	body = strstr(got, "warning: ") + strlen("warning: ");
	for (i = 0; body + i < got + n - 1; i += 4)
		assert_memory_equal(body + i, "\\x0a", 4);
	assert_ptr_equal(body + i, got + n - 1);
}

/* log_escape also escapes '"' and '\\', and still cuts at its size. */
struct escape_case {
	const char *in;
	size_t outsz;
	const char *want;
};

static const struct escape_case escape_cases[] = {
	{"req-1", 80, "req-1"},
	{"a\nb", 80, "a\\x0ab"},
	{"\"x\"\\", 80, "\\x22x\\x22\\x5c"},
	{"\xc3\xa9", 80, "\\xc3\\xa9"},
	{"abcdef", 4, "abc"},
	{"ab\n", 6, "ab"}, /* no room for a whole escape */
	{"", 8, ""},
};

static void
test_log_escape(void **state)
{
	char out[128];
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(escape_cases); i++) {
		const struct escape_case *t = &escape_cases[i];

		memset(out, 'Z', sizeof(out));
		assert_ptr_equal(log_escape(t->in, out, t->outsz), out);
		if (strcmp(out, t->want) != 0)
			fail_msg("row %zu: got \"%s\", want \"%s\"", i, out,
				 t->want);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_log_levels),
		cmocka_unit_test(test_log_format_args),
		cmocka_unit_test(test_log_long_line),
		cmocka_unit_test(test_log_neutralises),
		cmocka_unit_test(test_log_neutralise_cut),
		cmocka_unit_test(test_log_escape),
	};

	return cmocka_run_group_tests_name("test_log", tests, NULL, NULL);
}
