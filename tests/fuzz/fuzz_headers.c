/*
 * fuzz_headers.c - header filtering in both directions (shared/headers.c)
 * and CORS (shared/cors.c).
 *
 * Input: '\n'-separated lines. Each line, with its '\n' and without, goes
 * to hdr_forward_response() as libcurl hands a header line over (exactly
 * that many bytes, no terminator); as a C string to hdr_value_ok(),
 * cors_header_list_ok() and log_escape() (shared/log.c). The first three
 * lines are also CORS_ALLOW_ORIGINS (when config.c would take it), Origin
 * and Access-Control-Request-Headers for cors_headers() and
 * cors_preflight_headers(), whose output must stay one header per line:
 * no CR or LF but the line ends.
 */
#include "fuzz.h"

#include "cors.h"
#include "headers.h"
#include "log.h"

/*
 * CORS_ALLOW_ORIGINS as config.c admits it (parse_origins): non-empty,
 * visible ASCII and spaces only.
 */
static int
origins_ok(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
			return 0;
	return i > 0;
}

/* Every CR in b is followed by LF, every LF preceded by CR. */
static void
check_lines(const struct buf *b)
{
	size_t i;

	for (i = 0; i < b->b_len; i++) {
		if (b->b_p[i] == '\r' &&
		    (i + 1 >= b->b_len || b->b_p[i + 1] != '\n'))
			fuzz_fail("CORS: bare CR");
		if (b->b_p[i] == '\n' && (i == 0 || b->b_p[i - 1] != '\r'))
			fuzz_fail("CORS: bare LF");
		if (b->b_p[i] == '\0')
			fuzz_fail("CORS: NUL in output");
	}
}

/*
 * log_escape (shared/log.c), which every client-sent value goes through
 * on its way to a log line: terminated within the buffer, nothing but
 * printable ASCII out, '"' and '\\' escaped.
 */
static void
escape(const char *s)
{
	static const size_t sizes[] = {1, 2, 5, 64};
	char out[64];
	size_t i;
	size_t j;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		memset(out, 'Z', sizeof(out));
		(void)log_escape(s, out, sizes[i]);
		if (strnlen(out, sizes[i]) >= sizes[i])
			fuzz_fail("log_escape: not terminated");
		for (j = 0; out[j] != '\0'; j++)
			if ((unsigned char)out[j] < 0x20 ||
			    (unsigned char)out[j] >= 0x7f || out[j] == '"' ||
			    (out[j] == '\\' && out[j + 1] != 'x'))
				fuzz_fail("log_escape: %#x left as is",
					  (unsigned char)out[j]);
	}
}

static void
one_line(const uint8_t *p, size_t n)
{
	char *line = fuzz_memdup(p, n);
	char *s;
	size_t t;

	(void)hdr_forward_response(line, n);
	t = hdr_trim_eol(line, n);
	if (t > n)
		fuzz_fail("hdr_trim_eol grew the line");
	free(line);
	s = fuzz_strndup(p, n);
	(void)hdr_value_ok(s, 8);
	(void)hdr_value_ok(s, 4096);
	(void)cors_header_list_ok(s);
	escape(s);
	free(s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf b;
	char *f[3];
	size_t start = 0;
	size_t i;
	size_t n;

	for (i = 0; i < size; i++) {
		if (data[i] != '\n')
			continue;
		one_line(data + start, i + 1 - start); /* with its LF */
		one_line(data + start, i - start);
		start = i + 1;
	}
	one_line(data + start, size - start);

	n = fuzz_fields(data, size, f, 3);
	buf_init(&b, 16384);
	if (f[0] != NULL && origins_ok(f[0]))
		(void)cors_headers(&b, f[0], n > 1 ? f[1] : NULL);
	check_lines(&b);
	buf_reset(&b);
	(void)cors_preflight_headers(&b, n > 2 ? f[2] : NULL);
	check_lines(&b);
	buf_free(&b);
	fuzz_free_fields(f, n);
	return 0;
}
