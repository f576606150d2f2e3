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
#include <jansson.h>
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

/* -- LOG_FORMAT=json ---------------------------------------------------- */

static int
json_off(void **state)
{
	(void)state;
	log_set_format(0);
	return 0;
}

/*
 * The one line written by a log_info("%s", msg) (or log_warn when
 * with_errno) in JSON mode, checked to be one '\n'-ended line of at most
 * 1023 bytes, ASCII, that parses as one JSON object with no repeated
 * member; the caller json_decref's it. The raw line goes to raw if given.
 */
static json_t *
json_line(const char *msg, int with_errno, char *raw, size_t rawsz)
{
	char got[4096];
	json_error_t jerr;
	json_t *o;
	size_t n;
	size_t i;

	log_set_format(1);
	capture_start();
	if (with_errno) {
		errno = ENOENT;
		log_warn("%s", msg);
	} else {
		log_info("%s", msg);
	}
	n = capture_end(got, sizeof(got));
	log_set_format(0);
	assert_true(n <= 1023);
	assert_int_equal(got[n - 1], '\n');
	assert_ptr_equal(strchr(got, '\n'), got + n - 1);
	for (i = 0; i < n; i++)
		if ((unsigned char)got[i] < 0x20 && got[i] != '\n')
			fail_msg("control byte 0x%02x at %zu in %s",
				 (unsigned char)got[i], i, got);
		else if ((unsigned char)got[i] >= 0x7f)
			fail_msg("non-ASCII byte at %zu in %s", i, got);
	o = json_loadb(got, n, JSON_REJECT_DUPLICATES, &jerr);
	if (o == NULL)
		fail_msg("not JSON (%s at %d): %s", jerr.text, jerr.position,
			 got);
	if (!json_is_object(o))
		fail_msg("not an object: %s", got);
	if (raw != NULL)
		snprintf(raw, rawsz, "%.*s", (int)n, got);
	return o;
}

/* Every line's members: ts (RFC 3339, UTC, ms), level, pid, msg. */
static void
check_common(json_t *o, const char *level, const char *msg)
{
	const char *ts = json_string_value(json_object_get(o, "ts"));
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
	size_t i;

	assert_non_null(ts);
	assert_int_equal(strlen(ts), strlen(shape));
	for (i = 0; shape[i] != '\0'; i++)
		if (shape[i] == 'd' ? ts[i] < '0' || ts[i] > '9'
				    : ts[i] != shape[i])
			fail_msg("ts \"%s\" is not RFC 3339 UTC with ms", ts);
	assert_string_equal(json_string_value(json_object_get(o, "level")),
			    level);
	assert_true(json_is_integer(json_object_get(o, "pid")));
	assert_int_equal(json_integer_value(json_object_get(o, "pid")),
			 getpid());
	if (msg != NULL)
		assert_string_equal(
			json_string_value(json_object_get(o, "msg")), msg);
}

/* A line that is not a request line: ts, level, pid and msg only. */
static void
test_log_json_plain(void **state)
{
	json_t *o;
	char want[256];

	(void)state;
	o = json_line("Initialized with 3 API keys. 2 to 8 threads.", 0, NULL,
		      0);
	check_common(o, "info", "Initialized with 3 API keys. 2 to 8 threads.");
	assert_int_equal(json_object_size(o), 4);
	json_decref(o);
	/* "word word: ..." and "word x" are not request lines either. */
	o = json_line("upstream warm-up: a=b", 1, NULL, 0);
	snprintf(want, sizeof(want), "upstream warm-up: a=b: %s",
		 strerror(ENOENT));
	check_common(o, "warning", want);
	assert_int_equal(json_object_size(o), 4);
	json_decref(o);
	o = json_line("worker 3 exited with 1; restarting", 0, NULL, 0);
	assert_int_equal(json_object_size(o), 4);
	json_decref(o);
	o = json_line("", 0, NULL, 0);
	check_common(o, "info", "");
	assert_int_equal(json_object_size(o), 4);
	json_decref(o);
}

/* Levels as in the text form; errno kept. */
static void
test_log_json_levels(void **state)
{
	char got[2048];
	json_t *o;
	json_error_t jerr;
	size_t i;
	int after;

	(void)state;
	for (i = 0; i < NELEM(log_cases); i++) {
		const struct log_case *t = &log_cases[i];
		char want[512];

		snprintf(want, sizeof(want), "%s%s%s", t->msg,
			 t->with_errno ? ": " : "",
			 t->with_errno ? strerror(t->errnum) : "");
		log_set_format(1);
		capture_start();
		errno = t->errnum;
		call_logger(t->fn, t->msg);
		after = errno;
		capture_end(got, sizeof(got));
		log_set_format(0);
		o = json_loads(got, JSON_REJECT_DUPLICATES, &jerr);
		if (o == NULL)
			fail_msg("row %zu: not JSON (%s): %s", i, jerr.text,
				 got);
		check_common(o, t->level, want);
		json_decref(o);
		if (after != t->errnum)
			fail_msg("row %zu: errno %d after the call, was %d", i,
				 after, t->errnum);
	}
}

/* A chat request line as chat_log writes it: every token a field. */
static void
test_log_json_request(void **state)
{
	static const char line[] =
		"chat id=req-7f3a key=#1(1a2b3c4d) slot=1764488000123456 "
		"wait_ms=1.2 late_ms=0.123 clock_ms=0.051 "
		"sent_mono=1234.567890 status=200 "
		"ttfb_ms=80.5 total_ms=120.0 bytes=512 new_conns=0 "
		"backlog_ms=- thread_ms=0.4 client=- model=gpt-oss-120b "
		"est_tokens=12+100 prompt_tokens=12 completion_tokens=34 "
		"budget=tokens_minute:1000/2000 waited_for=- ok";
	json_t *o;

	(void)state;
	o = json_line(line, 0, NULL, 0);
	check_common(o, "info", line);
	assert_string_equal(json_string_value(json_object_get(o, "event")),
			    "chat");
	assert_string_equal(json_string_value(json_object_get(o, "id")),
			    "req-7f3a");
	assert_string_equal(json_string_value(json_object_get(o, "key")),
			    "#1(1a2b3c4d)");
	assert_true(json_is_integer(json_object_get(o, "slot")));
	assert_true(json_integer_value(json_object_get(o, "slot")) ==
		    1764488000123456LL);
	assert_true(json_is_real(json_object_get(o, "wait_ms")));
	assert_true(json_real_value(json_object_get(o, "wait_ms")) == 1.2);
	assert_true(json_real_value(json_object_get(o, "clock_ms")) == 0.051);
	assert_true(json_real_value(json_object_get(o, "sent_mono")) ==
		    1234.56789);
	assert_int_equal(json_integer_value(json_object_get(o, "status")), 200);
	assert_int_equal(json_integer_value(json_object_get(o, "bytes")), 512);
	assert_int_equal(json_integer_value(json_object_get(o, "new_conns")),
			 0);
	assert_true(json_is_null(json_object_get(o, "backlog_ms")));
	assert_true(json_is_null(json_object_get(o, "client")));
	assert_string_equal(json_string_value(json_object_get(o, "model")),
			    "gpt-oss-120b");
	assert_string_equal(json_string_value(json_object_get(o, "est_tokens")),
			    "12+100");
	assert_int_equal(
		json_integer_value(json_object_get(o, "prompt_tokens")), 12);
	assert_int_equal(
		json_integer_value(json_object_get(o, "completion_tokens")),
		34);
	assert_string_equal(json_string_value(json_object_get(o, "budget")),
			    "tokens_minute:1000/2000");
	assert_true(json_is_null(json_object_get(o, "waited_for")));
	assert_string_equal(json_string_value(json_object_get(o, "outcome")),
			    "ok");
	assert_null(json_object_get(o, "cut"));
	/* ts level pid msg event outcome + 21 fields */
	assert_int_equal(json_object_size(o), 6 + 21);
	json_decref(o);
}

/* Outcomes with spaces, denied and refused lines, other events. */
struct json_field_case {
	const char *msg;
	const char *name;    /* a member to check */
	const char *want;    /* its value, in JSON (json_dumps, compact) */
	const char *outcome; /* NULL: no "outcome" member */
};

static const struct json_field_case json_field_cases[] = {
	{"chat id=r1 status=502 total_ms=3.0 upstream answered 500; "
	 "retrying on another key",
	 "total_ms", "3.0", "upstream answered 500; retrying on another key"},
	{"chat id=r2 client=bob status=429 total_ms=1.5 model=m "
	 "waited_for=client refused: client_rate_limited, Retry-After: 3",
	 "waited_for", "\"client\"",
	 "refused: client_rate_limited, Retry-After: 3"},
	{"chat id=r3 client=- status=401 total_ms=0.2 refused: "
	 "invalid_proxy_token (no token)",
	 "status", "401", "refused: invalid_proxy_token (no token)"},
	{"completions id=r4 status=200 ok", "event", "\"completions\"", "ok"},
	{"models id=r5 status=200", "status", "200", NULL},
	/* An id of digits stays a string (ids are names, not amounts). */
	{"chat id=12345 status=200 ok", "id", "\"12345\"", "ok"},
	/* Numbers: plain decimals only; anything else a string. */
	{"chat a=-7 ok", "a", "-7", "ok"},
	{"chat a=0 ok", "a", "0", "ok"},
	{"chat a=0.5 ok", "a", "0.5", "ok"},
	{"chat a=007 ok", "a", "\"007\"", "ok"},
	{"chat a=1. ok", "a", "\"1.\"", "ok"},
	{"chat a=.5 ok", "a", "\".5\"", "ok"},
	{"chat a=1e5 ok", "a", "\"1e5\"", "ok"},
	{"chat a=-- ok", "a", "\"--\"", "ok"},
	{"chat a=- ok", "a", "null", "ok"},
	{"chat a= b=1", "a", "\"\"", NULL},
	{"chat a=x=y", "a", "\"x=y\"", NULL},
	/* Names are [a-z_]+; the first other token starts the outcome. */
	{"chat a=1 B=2 c=3", "a", "1", "B=2 c=3"},
	{"chat a=1 ok c=3", "a", "1", "ok c=3"},
	/* A repeated or reserved name is left to msg: first one wins. */
	{"chat id=one id=two ok", "id", "\"one\"", "ok"},
	{"chat id=x level=error msg=forged ts=1 pid=2 event=e ok", "level",
	 "\"info\"", "ok"},
	{"chat id=x outcome=forged ok", "event", "\"chat\"", "ok"},
	/* Quotes and backslashes in a value (log_escape'd values would not
	 * have them; unescaped ones stay valid JSON). */
	{"chat id=\"q\" p=a\\b ok", "id", "\"\\\"q\\\"\"", "ok"},
	{"chat id=x p=a\\b ok", "p", "\"a\\\\b\"", "ok"},
};

static void
test_log_json_fields(void **state)
{
	size_t i;
	json_t *o;
	char *got;
	const char *oc;

	(void)state;
	for (i = 0; i < NELEM(json_field_cases); i++) {
		const struct json_field_case *t = &json_field_cases[i];

		o = json_line(t->msg, 0, NULL, 0);
		check_common(o, "info", t->msg);
		got = json_dumps(json_object_get(o, t->name),
				 JSON_ENCODE_ANY | JSON_COMPACT |
					 JSON_REAL_PRECISION(17));
		if (got == NULL || strcmp(got, t->want) != 0)
			fail_msg("row %zu: %s is %s, want %s", i, t->name,
				 nz(got), t->want);
		free(got);
		oc = json_string_value(json_object_get(o, "outcome"));
		if (t->outcome == NULL ? oc != NULL
				       : oc == NULL || strcmp(oc, t->outcome))
			fail_msg("row %zu: outcome \"%s\", want \"%s\"", i,
				 nz(oc), nz(t->outcome));
		json_decref(o);
	}
}

/*
 * Whatever the message holds, the line is valid ASCII JSON, and msg is
 * the text form's message: control bytes, DEL and non-ASCII as \xHH,
 * quotes and backslashes as they are.
 */
static void
test_log_json_escaping(void **state)
{
	size_t i;
	json_t *o;
	char msg[256];
	char want[1024];
	char all[256];
	size_t n;

	(void)state;
	for (i = 0; i < NELEM(inject_cases); i++) {
		snprintf(msg, sizeof(msg), "id=%s", inject_cases[i].msg);
		o = json_line(msg, 0, NULL, 0);
		check_common(o, "info", inject_cases[i].want);
		json_decref(o);
	}
	/* A request line's values are the msg's, \xHH and all. */
	o = json_line("chat id=a\nb model=\xc3\xa9\x01 ok", 0, NULL, 0);
	check_common(o, "info", "chat id=a\\x0ab model=\\xc3\\xa9\\x01 ok");
	assert_string_equal(json_string_value(json_object_get(o, "id")),
			    "a\\x0ab");
	assert_string_equal(json_string_value(json_object_get(o, "model")),
			    "\\xc3\\xa9\\x01");
	json_decref(o);
	/* Every byte value but NUL: valid JSON, msg as the text form's. */
	for (i = 1; i < 256; i++)
		all[i - 1] = (char)i;
	all[255] = '\0';
	n = 0;
	for (i = 1; i < 256; i++)
		if (i >= 0x20 && i < 0x7f)
			want[n++] = (char)i;
		else
			n += (size_t)snprintf(want + n, sizeof(want) - n,
					      "\\x%02zx", i);
	want[n] = '\0';
	o = json_line(all, 0, NULL, 0);
	check_common(o, "info", want);
	json_decref(o);
}

/* Lines too long for 1023 bytes: cut, "cut":true, still valid JSON. */
static void
test_log_json_long(void **state)
{
	char msg[3000];
	char raw[2048];
	const char *m;
	json_t *o;
	size_t i;
	size_t n;
	static const char fill[] = {'x', '"', '\\', '\n', '\xe2'};

	(void)state;
	/* A long plain message, of each kind of byte: msg cut between
	 * escapes, never in the middle of one. */
	for (i = 0; i < NELEM(fill); i++) {
		memset(msg, fill[i], sizeof(msg) - 1);
		msg[sizeof(msg) - 1] = '\0';
		o = json_line(msg, 0, raw, sizeof(raw));
		check_common(o, "info", NULL);
		assert_true(json_is_true(json_object_get(o, "cut")));
		m = json_string_value(json_object_get(o, "msg"));
		assert_non_null(m);
		n = strlen(m);
		assert_true(n > 400); /* '"' takes 2 bytes in JSON */
		if (fill[i] == 'x' || fill[i] == '"' || fill[i] == '\\') {
			for (size_t k = 0; k < n; k++)
				assert_int_equal(m[k], fill[i]);
		} else {
			assert_int_equal(n % 4, 0);
		}
		/* Nearly all of the 1023 bytes are used. */
		assert_true(strlen(raw) > 1023 - 8);
		json_decref(o);
	}
	/* A request line with more fields than fit: the fields that fit,
	 * msg cut to its share, cut:true. */
	n = (size_t)snprintf(msg, sizeof(msg), "chat id=long");
	for (i = 0; i < 120; i++)
		n += (size_t)snprintf(msg + n, sizeof(msg) - n, " f%c%c=%zu",
				      'a' + (int)(i / 26), 'a' + (int)(i % 26),
				      i * 1000);
	snprintf(msg + n, sizeof(msg) - n, " ok");
	o = json_line(msg, 0, raw, sizeof(raw));
	check_common(o, "info", NULL);
	assert_true(json_is_true(json_object_get(o, "cut")));
	assert_string_equal(json_string_value(json_object_get(o, "id")),
			    "long");
	assert_int_equal(json_integer_value(json_object_get(o, "faa")), 0);
	assert_true(strlen(json_string_value(json_object_get(o, "msg"))) >=
		    100);
	assert_memory_equal(json_string_value(json_object_get(o, "msg")),
			    "chat id=long faa=0", 18);
	json_decref(o);
	/* A long message with strerror (log_warn): still valid. */
	memset(msg, 'y', sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = '\0';
	o = json_line(msg, 1, NULL, 0);
	check_common(o, "warning", NULL);
	json_decref(o);
}

/* Text stays the default, and comes back after JSON. */
static void
test_log_json_back_to_text(void **state)
{
	char got[256];
	char want[256];

	(void)state;
	log_set_format(1);
	log_set_format(0);
	snprintf(want, sizeof(want),
		 "cerebras-proxy[%ld]: info: chat id=x ok\n", (long)getpid());
	capture_start();
	log_info("chat id=x ok");
	capture_end(got, sizeof(got));
	assert_string_equal(got, want);
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
		cmocka_unit_test_teardown(test_log_json_plain, json_off),
		cmocka_unit_test_teardown(test_log_json_levels, json_off),
		cmocka_unit_test_teardown(test_log_json_request, json_off),
		cmocka_unit_test_teardown(test_log_json_fields, json_off),
		cmocka_unit_test_teardown(test_log_json_escaping, json_off),
		cmocka_unit_test_teardown(test_log_json_long, json_off),
		cmocka_unit_test_teardown(test_log_json_back_to_text, json_off),
	};

	return cmocka_run_group_tests_name("test_log", tests, NULL, NULL);
}
