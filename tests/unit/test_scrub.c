/*
 * test_scrub.c - masking configured secrets (scrub.c): table-driven rows
 * for one buffer, the held tail that lets a stream catch a secret split
 * across two chunks (every split point tried), the bitmap scan used for
 * many distinct anchors, and what is deliberately not caught.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "scrub.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"

/* Keys shaped like the integration tests' and like Cerebras' (52 bytes). */
static const char *const keys[] = {
	"sk-test-ALPHA-0001",
	"sk-test-BRAVO-0002",
	"csk-abcdefghijklmnopqrstuvwxyz0123456789abcdefghijkl",
	"sk-test-ALPHA-0001-LONGER", /* another starts with #0 */
	"short",		     /* under SCRUB_MIN_LEN: ignored */
};

struct mask_case {
	const char *in;
	const char *want;
	size_t count;
	int first; /* index of the first found, -1 for none */
};

static const struct mask_case mask_cases[] = {
	{"", "", 0, -1},
	{"Hello from the mock", "Hello from the mock", 0, -1},
	{"sk-test-ALPHA-0001", "******************", 1, 0},
	{"Authorization: Bearer sk-test-BRAVO-0002",
	 "Authorization: Bearer ******************", 1, 1},
	{"{\"message\":\"bad key sk-test-ALPHA-0001.\"}",
	 "{\"message\":\"bad key ******************.\"}", 1, 0},
	/* Twice, back to back, and two different keys. */
	{"sk-test-ALPHA-0001sk-test-ALPHA-0001",
	 "************************************", 2, 0},
	{"a sk-test-BRAVO-0002 b sk-test-ALPHA-0001 c",
	 "a ****************** b ****************** c", 2, 1},
	/* A long key keeps its first SCRUB_KEEP bytes. */
	{"x csk-abcdefghijklmnopqrstuvwxyz0123456789abcdefghijkl y",
	 "x csk-************************************************ y", 1, 2},
	/* The longest secret that starts at a place wins. */
	{"sk-test-ALPHA-0001-LONGER!", "sk-t*********************!", 1, 3},
	{"sk-test-ALPHA-0001-LONG", "******************-LONG", 1, 0},
	/* Near misses: one byte off, cut short, another case. */
	{"sk-test-ALPHA-0002", "sk-test-ALPHA-0002", 0, -1},
	{"sk-test-ALPHA-000", "sk-test-ALPHA-000", 0, -1},
	{"SK-TEST-ALPHA-0001", "SK-TEST-ALPHA-0001", 0, -1},
	/* Under SCRUB_MIN_LEN: not a secret to scrub. */
	{"short and shorter", "short and shorter", 0, -1},
	/* Not caught: transformed (base64 of "sk-test-ALPHA-0001"). */
	{"c2stdGVzdC1BTFBIQS0wMDAx", "c2stdGVzdC1BTFBIQS0wMDAx", 0, -1},
};

static struct scrub sc;

static int
setup(void **state)
{
	(void)state;
	return scrub_init(&sc, keys, (int)NELEM(keys)) == CP_OK ? 0 : -1;
}

static int
teardown(void **state)
{
	(void)state;
	scrub_free(&sc);
	return 0;
}

static void
test_scrub_init(void **state)
{
	(void)state;
	assert_int_equal(sc.sc_nsec, 4);
	assert_int_equal(sc.sc_skipped, 1);
	assert_int_equal(sc.sc_maxlen, strlen(keys[2]));
	/* "sk-t" and "csk-": the memmem scan. */
	assert_int_equal(sc.sc_nanchor, 2);
	assert_int_equal(sc.sc_nlens, 3);
}

static void
test_scrub_mask(void **state)
{
	char buf[256];
	size_t i;
	size_t n;
	size_t len;
	int first;

	(void)state;
	for (i = 0; i < NELEM(mask_cases); i++) {
		const struct mask_case *t = &mask_cases[i];

		len = strlen(t->in);
		memcpy(buf, t->in, len + 1);
		if (scrub_find(&sc, buf, len, len) != t->first)
			fail_msg("row %zu: scrub_find %d, want %d", i,
				 scrub_find(&sc, buf, len, len), t->first);
		n = scrub_mask(&sc, buf, len, len, &first);
		if (n != t->count || first != t->first ||
		    strcmp(buf, t->want) != 0)
			fail_msg("row %zu: got %zu \"%s\" (first %d), want %zu "
				 "\"%s\" (first %d)",
				 i, n, buf, first, t->count, t->want, t->first);
		/* Masked bytes are no secret: a second pass finds none. */
		assert_int_equal(scrub_mask(&sc, buf, len, len, NULL), 0);
	}
}

struct hold_case {
	const char *in;
	size_t hold;
};

static const struct hold_case hold_cases[] = {
	{"", 0},
	{"data: {}\n\n", 0}, /* an SSE event's end: nothing held */
	{"Bearer s", 1},
	{"Bearer sk-test-", 8},
	{"Bearer sk-test-ALPHA-000", 17},
	/* Whole #0, but #3 starts with it: held for what follows. */
	{"Bearer sk-test-ALPHA-0001", 18},
	{"Bearer sk-x", 0},
	{"cs", 2},
	{"...csk-abcdefghijklmnopqrstuvwxyz0123456789abcdefghijk", 51},
};

static void
test_scrub_hold(void **state)
{
	size_t i;
	size_t h;

	(void)state;
	for (i = 0; i < NELEM(hold_cases); i++) {
		h = scrub_hold(&sc, hold_cases[i].in, strlen(hold_cases[i].in));
		if (h != hold_cases[i].hold)
			fail_msg("row %zu \"%s\": hold %zu, want %zu", i,
				 hold_cases[i].in, h, hold_cases[i].hold);
	}
}

/*
 * What upstream.c does with a stream's chunks: the held tail is prepended
 * to the next chunk and only keys starting before it are masked; at the
 * end the held tail's keys are masked, or it is masked as the start of
 * one if 8 bytes or more. out gets what the client would; returns the
 * number masked.
 */
static size_t
relay(const char *const *chunks, size_t nchunks, char *out, size_t *outlen)
{
	char work[1024];
	char hold[600];
	size_t hlen = 0;
	size_t len;
	size_t h;
	size_t found = 0;
	size_t i;

	*outlen = 0;
	for (i = 0; i < nchunks; i++) {
		memcpy(work, hold, hlen);
		len = strlen(chunks[i]);
		memcpy(work + hlen, chunks[i], len);
		len += hlen;
		h = scrub_hold(&sc, work, len);
		found += scrub_mask(&sc, work, len, len - h, NULL);
		memcpy(hold, work + len - h, h);
		hlen = h;
		memcpy(out + *outlen, work, len - h);
		*outlen += len - h;
	}
	h = scrub_mask(&sc, hold, hlen, hlen, NULL);
	found += h;
	if (h == 0 && hlen >= 8 && scrub_mask_tail(&sc, hold, hlen) >= 0)
		found++;
	memcpy(out + *outlen, hold, hlen);
	*outlen += hlen;
	out[*outlen] = '\0';
	return found;
}

/*
 * A secret split across two chunks, at every possible place: each chunk
 * alone holds no whole secret (scrub_mask on its own would miss it), but
 * the relay with its held tail masks it whole, and the bytes out are the
 * whole text masked at once.
 */
static void
test_scrub_split(void **state)
{
	static const char *const texts[] = {
		"data: {\"content\":\"Bearer sk-test-ALPHA-0001\"}\n\n",
		"{\"error\":\"csk-abcdefghijklmnopqrstuvwxyz0123456789"
		"abcdefghijkl\"}",
		"sk-test-BRAVO-0002",
		/* #3 starts with #0: cut after #0, #3 still wins whole. */
		"[sk-test-ALPHA-0001-LONGER] [sk-test-ALPHA-0001]",
		"sk-test-ALPHA-0001",
		"no secret at all in this one, just s and cs and sk-",
	};
	char whole[512];
	char a[512];
	char out[1024];
	const char *chunks[2];
	size_t t;
	size_t cut;
	size_t len;
	size_t outlen;
	size_t want;
	size_t got;

	(void)state;
	for (t = 0; t < NELEM(texts); t++) {
		len = strlen(texts[t]);
		memcpy(whole, texts[t], len + 1);
		want = scrub_mask(&sc, whole, len, len, NULL);
		for (cut = 0; cut <= len; cut++) {
			memcpy(a, texts[t], cut);
			a[cut] = '\0';
			chunks[0] = a;
			chunks[1] = texts[t] + cut;
			got = relay(chunks, 2, out, &outlen);
			if (got != want || outlen != len ||
			    strcmp(out, whole) != 0)
				fail_msg("text %zu cut at %zu: %zu masked, "
					 "\"%s\"; want %zu, \"%s\"",
					 t, cut, got, out, want, whole);
		}
	}
}

/*
 * The end of a stream that stops inside a secret: 8 bytes or more of it
 * are masked, fewer go out (at most 7 bytes of a key's start).
 */
static void
test_scrub_tail_at_end(void **state)
{
	const char *c1[] = {"key: sk-test-ALP"};
	const char *c2[] = {"key: sk-test-"};
	const char *c3[] = {"key: sk-test"};
	char out[256];
	size_t outlen;

	(void)state;
	assert_int_equal(relay(c1, 1, out, &outlen), 1);
	assert_string_equal(out, "key: ***********");
	assert_int_equal(relay(c2, 1, out, &outlen), 1);
	assert_string_equal(out, "key: ********");
	assert_int_equal(relay(c3, 1, out, &outlen), 0);
	assert_string_equal(out, "key: sk-test");
	assert_int_equal(scrub_mask_tail(&sc, out, 3), -1); /* "key" */
}

/*
 * More distinct anchors than SCRUB_MEMMEM_MAX: the one-pass bitmap scan
 * finds the same as memmem would, at every position.
 */
static void
test_scrub_many_anchors(void **state)
{
	enum { N = 40 };
	char store[N][32];
	const char *list[N];
	struct scrub many;
	char buf[4096]; /* what gcc's truncation check counts for two rows */
	char want[4096];
	size_t i;
	size_t n;
	int first;

	(void)state;
	for (i = 0; i < N; i++) {
		snprintf(store[i], sizeof(store[i]), "%c%02zu-token-%03zu",
			 (char)('a' + i % 26), i, i * 7);
		list[i] = store[i];
	}
	assert_int_equal(scrub_init(&many, list, N), CP_OK);
	assert_true(many.sc_nanchor > SCRUB_MEMMEM_MAX);
	for (i = 0; i < N; i++) {
		snprintf(buf, sizeof(buf), "x%s, %s!", store[i],
			 store[(i + 1) % N]);
		snprintf(want, sizeof(want), "x%.*s, %.*s!",
			 (int)strlen(store[i]), "****************",
			 (int)strlen(store[(i + 1) % N]), "****************");
		assert_int_equal(scrub_find(&many, buf, strlen(buf), 4096),
				 (int)i);
		n = scrub_mask(&many, buf, strlen(buf), strlen(buf), &first);
		assert_int_equal(n, 2);
		assert_int_equal(first, (int)i);
		assert_string_equal(buf, want);
	}
	scrub_free(&many);
}

/* The obvious way: at each place the longest secret, masked, skipped. */
static size_t
naive_mask(char *p, size_t len)
{
	size_t pos;
	size_t k;
	size_t best;
	size_t l;
	size_t found = 0;
	size_t keep;

	for (pos = 0; pos < len;) {
		best = 0;
		for (k = 0; k < NELEM(keys); k++) {
			l = strlen(keys[k]);
			if (l >= SCRUB_MIN_LEN && l <= len - pos && l > best &&
			    memcmp(p + pos, keys[k], l) == 0)
				best = l;
		}
		if (best == 0) {
			pos++;
			continue;
		}
		keep = best >= SCRUB_KEEP_MIN ? SCRUB_KEEP : 0;
		memset(p + pos + keep, '*', best - keep);
		pos += best;
		found++;
	}
	return found;
}

/*
 * Random texts made of the keys, their starts and ends and other bytes,
 * cut into random chunks: scrub_mask finds what the obvious way finds,
 * and the relay sends the same bytes as masking the whole text at once.
 */
static void
test_scrub_random(void **state)
{
	static const char *const bits[] = {
		"sk-test-", "ALPHA-000",
		"1",	    "2",
		"-LONGER",  "BRAVO-0002",
		"csk-",	    "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijkl",
		"s",	    "c",
		" ",	    "\n\n",
		"data: ",   "-",
		"sk-",	    "x",
	};
	char text[512];
	char want[512];
	char got[512];
	char pieces[4][512];
	const char *chunks[4];
	char out[1024];
	size_t len;
	size_t outlen;
	size_t nw;
	size_t ng;
	size_t at;
	size_t nchunks;
	size_t c;
	size_t cut[5];
	unsigned seed = 12345;
	int it;

	(void)state;
	for (it = 0; it < 20000; it++) {
		len = 0;
		while (len < 300) {
			seed = seed * 1103515245u + 12345u;
			const char *b = bits[(seed >> 16) % NELEM(bits)];

			if (len + strlen(b) >= sizeof(text) - 1 ||
			    (seed >> 8) % 23 == 0)
				break;
			memcpy(text + len, b, strlen(b));
			len += strlen(b);
		}
		text[len] = '\0';
		memcpy(want, text, len + 1);
		memcpy(got, text, len + 1);
		nw = naive_mask(want, len);
		ng = scrub_mask(&sc, got, len, len, NULL);
		if (ng != nw || strcmp(got, want) != 0)
			fail_msg("\"%s\": %zu \"%s\", want %zu \"%s\"", text,
				 ng, got, nw, want);
		/* Up to 4 chunks, cut anywhere. */
		seed = seed * 1103515245u + 12345u;
		nchunks = 1 + (seed >> 16) % 4;
		cut[0] = 0;
		cut[nchunks] = len;
		for (c = 1; c < nchunks; c++) {
			seed = seed * 1103515245u + 12345u;
			at = len ? (seed >> 12) % (len + 1) : 0;
			cut[c] = at < cut[c - 1] ? cut[c - 1] : at;
		}
		for (c = 0; c < nchunks; c++) {
			memcpy(pieces[c], text + cut[c], cut[c + 1] - cut[c]);
			pieces[c][cut[c + 1] - cut[c]] = '\0';
			chunks[c] = pieces[c];
		}
		relay(chunks, nchunks, out, &outlen);
		/* A stream may also end in a key's start: masked, not sent. */
		if (outlen != len ||
		    (strcmp(out, want) != 0 &&
		     (scrub_hold(&sc, text, len) < 8 ||
		      memcmp(out, want, len - scrub_hold(&sc, text, len)) !=
			      0)))
			fail_msg("chunks of \"%s\": \"%s\", want \"%s\"", text,
				 out, want);
	}
}

/* No secrets: nothing found, nothing held, nothing touched. */
static void
test_scrub_empty(void **state)
{
	struct scrub none;
	const char *nothing[] = {NULL, "tiny"};
	char buf[] = "sk-test-ALPHA-0001";

	(void)state;
	assert_int_equal(scrub_init(&none, NULL, 0), CP_OK);
	assert_int_equal(scrub_find(&none, buf, strlen(buf), 18), -1);
	assert_int_equal(scrub_hold(&none, buf, strlen(buf)), 0);
	scrub_free(&none);
	assert_int_equal(scrub_init(&none, nothing, 2), CP_OK);
	assert_int_equal(none.sc_skipped, 2);
	assert_int_equal(scrub_mask(&none, buf, strlen(buf), 18, NULL), 0);
	assert_string_equal(buf, "sk-test-ALPHA-0001");
	scrub_free(&none);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scrub_init),
		cmocka_unit_test(test_scrub_mask),
		cmocka_unit_test(test_scrub_hold),
		cmocka_unit_test(test_scrub_split),
		cmocka_unit_test(test_scrub_tail_at_end),
		cmocka_unit_test(test_scrub_many_anchors),
		cmocka_unit_test(test_scrub_random),
		cmocka_unit_test(test_scrub_empty),
	};

	return cmocka_run_group_tests_name("test_scrub", tests, setup,
					   teardown);
}
