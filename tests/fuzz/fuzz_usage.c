/*
 * fuzz_usage.c - the usage scanner (shared/usage.c): a JSON answer, or an
 * event stream fed in arbitrary chunks as libcurl hands them over.
 *
 * Input: byte 0 picks the mode (bit 0: an event stream), byte 1 seeds the
 * chunk sizes (0 to 31 bytes, each chunk its own allocation of exactly
 * that size); the rest is the answer. The answer is scanned three times,
 * whole, in those chunks and a byte at a time: the usage read must be the
 * same each time (the scanner keeps its state across chunks).
 */
#include "fuzz.h"

#include "usage.h"

/* Scans p[0..n) fed in pieces; step 0: whole, 1: bytes, else seeded. */
static struct usage
scan(int sse, const uint8_t *p, size_t n, unsigned step, unsigned seed)
{
	struct usage_scan s;
	struct usage u;
	size_t off = 0;
	size_t k;
	char *chunk;

	usage_scan_init(&s, sse);
	while (off < n) {
		if (step == 0)
			k = n;
		else if (step == 1)
			k = 1;
		else {
			seed = seed * 1103515245u + 12345u;
			k = (seed >> 16) % 32; /* 0: an empty feed */
		}
		if (k > n - off)
			k = n - off;
		chunk = fuzz_memdup(p + off, k);
		usage_scan_feed(&s, chunk, k);
		free(chunk);
		off += k;
	}
	usage_scan_end(&s);
	u = s.sc_usage;
	usage_scan_free(&s);
	return u;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct usage a, b, c, u;
	char *copy;
	int sse;

	if (size < 2)
		return 0;
	sse = data[0] & 1;
	a = scan(sse, data + 2, size - 2, 0, 0);
	b = scan(sse, data + 2, size - 2, 1, 0);
	c = scan(sse, data + 2, size - 2, 2, data[1]);
	if (a.u_prompt != b.u_prompt || a.u_completion != b.u_completion ||
	    a.u_prompt != c.u_prompt || a.u_completion != c.u_completion)
		fuzz_fail("usage depends on chunking: whole %lld/%lld, "
			  "bytes %lld/%lld, chunks %lld/%lld",
			  a.u_prompt, a.u_completion, b.u_prompt,
			  b.u_completion, c.u_prompt, c.u_completion);
	if (a.u_prompt < -1 || a.u_completion < -1)
		fuzz_fail("negative usage");
	copy = fuzz_memdup(data + 2, size - 2);
	u.u_prompt = -1;
	u.u_completion = -1;
	if (usage_from_json(copy, size - 2, &u) && u.u_prompt < 0 &&
	    u.u_completion < 0)
		fuzz_fail("usage_from_json: 1 with nothing read");
	free(copy);
	return 0;
}
