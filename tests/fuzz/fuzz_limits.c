/*
 * fuzz_limits.c - the x-ratelimit-* header parser and the 429 cool-down
 * (shared/headers.c: hdr_limits, hdr_cooldown_ms, hdr_has).
 *
 * Input: a response's header block ("Name: value\r\n" lines, as
 * upstream.c collects it), as a C string. Checks the contract of
 * struct hdr_limit: a known pair has 0 <= remaining <= limit; reset and
 * cool-down times are -1 or within 0 .. 30 days.
 */
#include "fuzz.h"

#include "headers.h"

#define MAX_MS (30L * 86400 * 1000 + 1)

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hdr_limit l[HDR_NLIMITS];
	char *block = fuzz_strndup(data, size);
	long ms;
	size_t i;

	memset(l, 0x5a, sizeof(l));
	hdr_limits(block, l);
	for (i = 0; i < HDR_NLIMITS; i++) {
		if (l[i].hl_known && (l[i].hl_remaining < 0 ||
				      l[i].hl_remaining > l[i].hl_limit))
			fuzz_fail("hdr_limits: %s known but out of range",
				  hdr_limit_names[i]);
		if (l[i].hl_reset_ms < -1 || l[i].hl_reset_ms > MAX_MS)
			fuzz_fail("hdr_limits: reset %ld ms", l[i].hl_reset_ms);
	}
	ms = hdr_cooldown_ms(block);
	if (ms < -1 || ms > MAX_MS)
		fuzz_fail("hdr_cooldown_ms: %ld", ms);
	(void)hdr_has(block, "retry-after");
	(void)hdr_has(block, "x-ratelimit-limit-tokens-minute");
	free(block);
	return 0;
}
