/*
 * fuzz_scrub.c - masking secrets in what the upstream sends
 * (shared/scrub.c), over a whole buffer and over a stream in pieces.
 *
 * Input: byte 0 seeds the piece sizes; then one line of secrets
 * separated by ',' (at most 8; a '*' in them becomes '+', as no key holds
 * one); the rest is the answer. It is masked whole (scrub_mask), and
 * streamed as upstream.c does (scrub_hold, scrub_mask of what starts
 * before the held tail, the tail prepended to the next piece, at the end
 * scrub_mask or else scrub_mask_tail of what is left). Either way no
 * secret may be left in the output, and a byte is either unchanged or
 * became '*'.
 */
#include "fuzz.h"

#include "scrub.h"

#define MAX_SECRETS 8

static void
check(const struct scrub *s, const char *in, const char *out, size_t n,
      const char *how)
{
	size_t i;

	if (scrub_find(s, out, n, n) >= 0)
		fuzz_fail("%s: a secret is left", how);
	for (i = 0; i < n; i++)
		if (out[i] != in[i] && out[i] != '*')
			fuzz_fail("%s: byte %zu changed to %#x", how, i,
				  (unsigned char)out[i]);
}

/* The stream, in pieces of 0..63 bytes from seed. */
static void
stream(const struct scrub *s, const char *in, size_t n, unsigned seed)
{
	struct buf out;
	struct buf cur;
	struct buf hold;
	size_t off = 0;
	size_t k;
	size_t h;

	buf_init(&out, n + 1);
	buf_init(&cur, n + 1);
	buf_init(&hold, n + 1);
	while (off < n) {
		seed = seed * 1103515245u + 12345u;
		k = (seed >> 16) % 64;
		if (k > n - off)
			k = n - off;
		buf_reset(&cur);
		if (buf_add(&cur, hold.b_p ? hold.b_p : "", hold.b_len) ||
		    buf_add(&cur, in + off, k))
			abort();
		off += k;
		buf_reset(&hold);
		h = scrub_hold(s, cur.b_p, cur.b_len);
		if (h > cur.b_len)
			fuzz_fail("scrub_hold: more than the piece");
		(void)scrub_mask(s, cur.b_p, cur.b_len, cur.b_len - h, NULL);
		if (buf_add(&out, cur.b_p, cur.b_len - h) ||
		    buf_add(&hold, cur.b_p + cur.b_len - h, h))
			abort();
	}
	if (hold.b_len > 0 &&
	    scrub_mask(s, hold.b_p, hold.b_len, hold.b_len, NULL) == 0)
		(void)scrub_mask_tail(s, hold.b_p, hold.b_len);
	if (buf_add(&out, hold.b_p ? hold.b_p : "", hold.b_len))
		abort();
	if (out.b_len != n)
		fuzz_fail("stream: %zu bytes out of %zu", out.b_len, n);
	check(s, in, out.b_p ? out.b_p : "", n, "stream");
	buf_free(&out);
	buf_free(&cur);
	buf_free(&hold);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct scrub s;
	char *sec[MAX_SECRETS];
	const char *list[MAX_SECRETS];
	const uint8_t *nl;
	char *line;
	char *p;
	char *in;
	char *whole;
	size_t n;
	int ns = 0;
	int i;

	if (size < 2)
		return 0;
	nl = memchr(data + 1, '\n', size - 1);
	if (nl == NULL)
		return 0;
	line = fuzz_strndup(data + 1, (size_t)(nl - data - 1));
	for (p = line; *p != '\0'; p++)
		if (*p == '*')
			*p = '+';
	for (p = line; ns < MAX_SECRETS;) {
		n = strcspn(p, ",");
		sec[ns] = fuzz_strndup((const uint8_t *)p, n);
		list[ns] = sec[ns];
		ns++;
		if (p[n] == '\0')
			break;
		p += n + 1;
	}
	if (scrub_init(&s, list, ns) != CP_OK)
		abort();
	n = size - (size_t)(nl + 1 - data);
	in = fuzz_memdup(nl + 1, n);
	whole = fuzz_memdup(nl + 1, n);
	(void)scrub_mask(&s, whole, n, n, NULL);
	check(&s, in, whole, n, "whole");
	stream(&s, in, n, data[0]);
	free(whole);
	free(in);
	scrub_free(&s);
	for (i = 0; i < ns; i++)
		free(sec[i]);
	free(line);
	return 0;
}
