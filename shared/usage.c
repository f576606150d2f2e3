/*
 * usage.c - reading "usage" out of answers in passing (see usage.h). JSON
 * goes through jansson; only an event that mentions "usage" is parsed.
 */
#include "usage.h"

#include <jansson.h>
#include <string.h>

/* Largest JSON answer, or event, kept for reading; larger are skipped. */
#define USAGE_KEEP_MAX (256 * 1024)

void
usage_scan_init(struct usage_scan *s, int sse)
{
	memset(s, 0, sizeof(*s));
	s->sc_sse = sse;
	s->sc_line_start = 1;
	buf_init(&s->sc_buf, USAGE_KEEP_MAX);
	s->sc_usage.u_prompt = -1;
	s->sc_usage.u_completion = -1;
}

void
usage_scan_free(struct usage_scan *s)
{
	buf_free(&s->sc_buf);
}

/* A count that fits: a JSON integer, not negative. */
static long long
count_of(json_t *v)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	return (long long)json_integer_value(v);
}

int
usage_from_json(const char *text, size_t len, struct usage *u)
{
	json_error_t e;
	json_t *root;
	json_t *us;
	long long p, c;

	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
	if (root == NULL)
		return 0;
	us = json_object_get(root, "usage");
	p = json_is_object(us) ? count_of(json_object_get(us, "prompt_tokens"))
			       : -1;
	c = json_is_object(us)
		    ? count_of(json_object_get(us, "completion_tokens"))
		    : -1;
	json_decref(root);
	if (p < 0 && c < 0)
		return 0;
	u->u_prompt = p;
	u->u_completion = c;
	return 1;
}

/* One whole event: its data lines, if it mentions usage at all. */
static void
scan_event(struct usage_scan *s)
{
	const char *p = s->sc_buf.b_p;
	const char *end = p + s->sc_buf.b_len;
	const char *eol;
	const char *d;
	size_t n;

	if (s->sc_buf.b_len == 0 ||
	    memmem(p, s->sc_buf.b_len, "\"usage\"", 7) == NULL)
		return;
	for (; p < end; p = eol + 1) {
		eol = memchr(p, '\n', (size_t)(end - p));
		if (eol == NULL)
			eol = end;
		n = (size_t)(eol - p);
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (n < 5 || memcmp(p, "data:", 5) != 0)
			continue;
		d = p + 5;
		if (d < p + n && *d == ' ')
			d++;
		(void)usage_from_json(d, (size_t)(p + n - d), &s->sc_usage);
		if (eol == end)
			break;
	}
}

/* Keeps bytes of the current event (or the JSON), unless too many. */
static void
keep(struct usage_scan *s, const char *p, size_t n)
{
	if (s->sc_skip || n == 0)
		return;
	if (buf_add(&s->sc_buf, p, n) != CP_OK) {
		s->sc_skip = 1;
		buf_reset(&s->sc_buf);
	}
}

void
usage_scan_feed(struct usage_scan *s, const char *p, size_t n)
{
	const char *start = p;
	const char *end = p + n;

	if (!s->sc_sse) {
		keep(s, p, n);
		return;
	}
	/* An event ends with an empty line ("\n\n", CRs allowed). */
	for (; p < end; p++) {
		if (*p == '\r')
			continue;
		if (*p != '\n') {
			s->sc_line_start = 0;
			continue;
		}
		if (!s->sc_line_start) {
			s->sc_line_start = 1;
			continue;
		}
		keep(s, start, (size_t)(p + 1 - start));
		if (!s->sc_skip)
			scan_event(s);
		buf_reset(&s->sc_buf);
		s->sc_skip = 0;
		start = p + 1;
	}
	keep(s, start, (size_t)(end - start));
}

void
usage_scan_end(struct usage_scan *s)
{
	if (!s->sc_sse && !s->sc_skip && s->sc_buf.b_len > 0)
		(void)usage_from_json(s->sc_buf.b_p, s->sc_buf.b_len,
				      &s->sc_usage);
	buf_reset(&s->sc_buf);
}
