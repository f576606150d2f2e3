/*
 * scrub.c - finding and masking known secrets in a buffer (no I/O).
 */
#include "scrub.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(SCRUB_MIN_LEN >= SCRUB_ANCHOR, "an anchor is 4 whole bytes");

#define HASH_BITS 16 /* the many-anchors filter: 2^16 bits, 8 KiB */

/* Longest first, then by bytes: equal lengths are contiguous and sorted. */
static int
cmp_secret(const void *a, const void *b)
{
	const struct scrub_secret *x = a;
	const struct scrub_secret *y = b;
	int c;

	if (x->se_len != y->se_len)
		return x->se_len > y->se_len ? -1 : 1;
	c = memcmp(x->se_p, y->se_p, x->se_len);
	if (c != 0)
		return c;
	return x->se_index - y->se_index;
}

static int
cmp_anchor(const void *a, const void *b)
{
	return memcmp(a, b, SCRUB_ANCHOR);
}

static int
first_has(const struct scrub *s, unsigned char c)
{
	return (s->sc_first[c >> 3] >> (c & 7)) & 1;
}

/* The 4 bytes at p hashed to HASH_BITS bits (Knuth's multiplicative). */
static uint32_t
anchor_hash(const char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return (v * 2654435761u) >> (32 - HASH_BITS);
}

/*
 * How common byte c is in what an upstream sends (JSON, English, base64
 * ids): letters, digits, blank and JSON punctuation are; '-', '_', '/'
 * and the like much less so.
 */
static int
byte_common(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return 2;
	return strchr(" \"{}[]:,.", c) != NULL && c != '\0' ? 2 : 1;
}

enum cp_err
scrub_init(struct scrub *s, const char *const *secrets, int n)
{
	size_t i;
	size_t len;
	int k;

	memset(s, 0, sizeof(*s));
	if (n <= 0)
		return CP_OK;
	s->sc_sec = calloc((size_t)n, sizeof(*s->sc_sec));
	s->sc_lens = calloc((size_t)n, sizeof(*s->sc_lens));
	s->sc_lstart = calloc((size_t)n + 1, sizeof(*s->sc_lstart));
	s->sc_anchor = calloc((size_t)n, sizeof(*s->sc_anchor));
	if (s->sc_sec == NULL || s->sc_lens == NULL || s->sc_lstart == NULL ||
	    s->sc_anchor == NULL) {
		scrub_free(s);
		return CP_ERR_NOMEM;
	}
	for (k = 0; k < n; k++) {
		len = secrets[k] != NULL ? strlen(secrets[k]) : 0;
		if (len < SCRUB_MIN_LEN) {
			s->sc_skipped++;
			continue;
		}
		s->sc_sec[s->sc_nsec].se_p = secrets[k];
		s->sc_sec[s->sc_nsec].se_len = len;
		s->sc_sec[s->sc_nsec].se_index = k;
		s->sc_nsec++;
		if (len > s->sc_maxlen)
			s->sc_maxlen = len;
	}
	qsort(s->sc_sec, s->sc_nsec, sizeof(*s->sc_sec), cmp_secret);
	for (i = 0; i < s->sc_nsec; i++) {
		const struct scrub_secret *e = &s->sc_sec[i];

		if (i == 0 || e->se_len != s->sc_sec[i - 1].se_len) {
			s->sc_lens[s->sc_nlens] = e->se_len;
			s->sc_lstart[s->sc_nlens] = i;
			s->sc_nlens++;
		}
		s->sc_first[(unsigned char)e->se_p[0] >> 3] |=
			(unsigned char)(1u << ((unsigned char)e->se_p[0] & 7));
		memcpy(s->sc_anchor[i], e->se_p, SCRUB_ANCHOR);
	}
	s->sc_lstart[s->sc_nlens] = s->sc_nsec;
	qsort(s->sc_anchor, s->sc_nsec, sizeof(*s->sc_anchor), cmp_anchor);
	for (i = 0; i < s->sc_nsec; i++)
		if (i == 0 || cmp_anchor(s->sc_anchor[i],
					 s->sc_anchor[s->sc_nanchor - 1]) != 0)
			memmove(s->sc_anchor[s->sc_nanchor++], s->sc_anchor[i],
				SCRUB_ANCHOR);
	if (s->sc_nanchor <= SCRUB_MEMMEM_MAX) {
		/* Each anchor is looked for by its least common byte. */
		for (i = 0; i < s->sc_nanchor; i++)
			for (k = 0; k < SCRUB_ANCHOR; k++)
				if (byte_common((unsigned char)
							s->sc_anchor[i][k]) <=
				    byte_common((unsigned char)s->sc_anchor
							[i][s->sc_rare[i]]))
					s->sc_rare[i] = (unsigned char)k;
		return CP_OK;
	}
	s->sc_hash = calloc((size_t)1 << HASH_BITS >> 6, sizeof(uint64_t));
	if (s->sc_hash == NULL) {
		scrub_free(s);
		return CP_ERR_NOMEM;
	}
	for (i = 0; i < s->sc_nanchor; i++) {
		uint32_t h = anchor_hash(s->sc_anchor[i]);

		s->sc_hash[h >> 6] |= (uint64_t)1 << (h & 63);
	}
	return CP_OK;
}

void
scrub_free(struct scrub *s)
{
	free(s->sc_sec);
	free(s->sc_lens);
	free(s->sc_lstart);
	free(s->sc_anchor);
	free(s->sc_hash);
	memset(s, 0, sizeof(*s));
}

/*
 * The first secret of group g (one length) whose first m bytes are not
 * below t[0..m): a binary search over the group's sorted secrets.
 */
static size_t
lower_bound(const struct scrub *s, size_t g, const char *t, size_t m)
{
	size_t lo = s->sc_lstart[g];
	size_t hi = s->sc_lstart[g + 1];
	size_t mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (memcmp(s->sc_sec[mid].se_p, t, m) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The longest secret that p[pos..len) starts with, or NULL. */
static const struct scrub_secret *
match_at(const struct scrub *s, const char *p, size_t len, size_t pos)
{
	size_t g;
	size_t i;
	size_t l;

	for (g = 0; g < s->sc_nlens; g++) {
		l = s->sc_lens[g];
		if (l > len - pos)
			continue;
		i = lower_bound(s, g, p + pos, l);
		if (i < s->sc_lstart[g + 1] &&
		    memcmp(s->sc_sec[i].se_p, p + pos, l) == 0)
			return &s->sc_sec[i];
	}
	return NULL;
}

/* A secret that t[0..m) is the start of (m below its length), or NULL. */
static const struct scrub_secret *
prefix_of(const struct scrub *s, const char *t, size_t m)
{
	size_t g;
	size_t i;

	for (g = 0; g < s->sc_nlens && s->sc_lens[g] > m; g++) {
		i = lower_bound(s, g, t, m);
		if (i < s->sc_lstart[g + 1] &&
		    memcmp(s->sc_sec[i].se_p, t, m) == 0)
			return &s->sc_sec[i];
	}
	return NULL;
}

static void
mask(const struct scrub_secret *e, char *p, size_t len)
{
	size_t keep = e->se_len >= SCRUB_KEEP_MIN ? SCRUB_KEEP : 0;

	if (keep > len)
		keep = len;
	memset(p + keep, '*', len - keep);
}

/* Whether p[pos..) starts with one of the anchors (SCRUB_ANCHOR bytes). */
static int
anchor_at(const struct scrub *s, const char *p, size_t pos)
{
	size_t lo = 0;
	size_t hi = s->sc_nanchor;
	size_t mid;
	int c;

	uint32_t h = anchor_hash(p + pos);

	if (!((s->sc_hash[h >> 6] >> (h & 63)) & 1))
		return 0;
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		c = memcmp(s->sc_anchor[mid], p + pos, SCRUB_ANCHOR);
		if (c == 0)
			return 1;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/*
 * The scan behind scrub_find (out NULL: stop at the first secret) and
 * scrub_mask (out == p: mask each), of the secrets that start before
 * starts. Returns the number found.
 */
static size_t
scan(const struct scrub *s, const char *p, size_t len, size_t starts, char *out,
     int *first)
{
	const struct scrub_secret *e;
	const char *q;
	size_t a;
	size_t pos;
	size_t found = 0;

	if (first != NULL)
		*first = -1;
	if (starts > len)
		starts = len;
	if (s->sc_nsec == 0 || len < SCRUB_ANCHOR)
		return 0;
	if (s->sc_nanchor <= SCRUB_MEMMEM_MAX) {
		for (a = 0; a < s->sc_nanchor; a++) {
			/*
			 * memchr(3) for the anchor's least common byte r
			 * ('-' of "csk-"), then the anchor around it: a
			 * vectorised memchr runs at several bytes per ns,
			 * memmem(3) at about one.
			 */
			size_t r = s->sc_rare[a];
			char c = s->sc_anchor[a][r];

			for (pos = r; pos < len; pos++) {
				q = memchr(p + pos, c, len - pos);
				if (q == NULL)
					break;
				pos = (size_t)(q - p);
				if (pos - r >= starts)
					break;
				if (pos - r + SCRUB_ANCHOR > len ||
				    memcmp(p + pos - r, s->sc_anchor[a],
					   SCRUB_ANCHOR) != 0)
					continue;
				e = match_at(s, p, len, pos - r);
				if (e == NULL)
					continue;
				if (found++ == 0 && first != NULL)
					*first = e->se_index;
				if (out == NULL)
					return found;
				mask(e, out + pos - r, e->se_len);
				pos += e->se_len - 1;
			}
		}
		return found;
	}
	for (pos = 0; pos < starts && pos + SCRUB_ANCHOR <= len; pos++) {
		if (!anchor_at(s, p, pos))
			continue;
		e = match_at(s, p, len, pos);
		if (e == NULL)
			continue;
		if (found++ == 0 && first != NULL)
			*first = e->se_index;
		if (out == NULL)
			return found;
		mask(e, out + pos, e->se_len);
		pos += e->se_len - 1;
	}
	return found;
}

int
scrub_find(const struct scrub *s, const char *p, size_t len, size_t starts)
{
	int first;

	scan(s, p, len, starts, NULL, &first);
	return first;
}

size_t
scrub_mask(const struct scrub *s, char *p, size_t len, size_t starts,
	   int *first)
{
	return scan(s, p, len, starts, p, first);
}

/* Whether t[0..m) (m < SCRUB_ANCHOR) is the start of an anchor. */
static int
anchor_prefix(const struct scrub *s, const char *t, size_t m)
{
	size_t lo = 0;
	size_t hi = s->sc_nanchor;
	size_t mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (memcmp(s->sc_anchor[mid], t, m) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < s->sc_nanchor && memcmp(s->sc_anchor[lo], t, m) == 0;
}

/*
 * The first place in p[from..before) where anchor a starts and what
 * follows to len is the start of a secret; before if none.
 */
static size_t
hold_from(const struct scrub *s, size_t a, const char *p, size_t len,
	  size_t from, size_t before)
{
	size_t r = s->sc_rare[a];
	char c = s->sc_anchor[a][r];
	/* Where the rare byte of an anchor starting before before can be. */
	size_t end = before + r < len ? before + r : len;
	const char *q;
	size_t pos;

	for (pos = from + r; pos < end; pos++) {
		q = memchr(p + pos, c, end - pos);
		if (q == NULL)
			break;
		pos = (size_t)(q - p);
		if (pos - r + SCRUB_ANCHOR <= len &&
		    memcmp(p + pos - r, s->sc_anchor[a], SCRUB_ANCHOR) == 0 &&
		    prefix_of(s, p + pos - r, len - (pos - r)) != NULL)
			return pos - r;
	}
	return before;
}

size_t
scrub_hold(const struct scrub *s, const char *p, size_t len)
{
	size_t from;
	size_t pos;
	size_t best;
	size_t a;

	if (s->sc_nsec == 0 || len == 0)
		return 0;
	/* A held tail is shorter than the longest secret. */
	from = len >= s->sc_maxlen ? len - (s->sc_maxlen - 1) : 0;
	/* Tails of an anchor or more start with one: look for those. */
	if (s->sc_nanchor <= SCRUB_MEMMEM_MAX) {
		best = len;
		for (a = 0; a < s->sc_nanchor; a++)
			best = hold_from(s, a, p, len, from, best);
		if (best < len)
			return len - best;
	} else {
		for (pos = from; pos + SCRUB_ANCHOR <= len; pos++)
			if (anchor_at(s, p, pos) &&
			    prefix_of(s, p + pos, len - pos) != NULL)
				return len - pos;
	}
	/* Shorter tails: the start of an anchor. */
	pos = len > SCRUB_ANCHOR - 1 ? len - (SCRUB_ANCHOR - 1) : 0;
	if (pos < from)
		pos = from;
	for (; pos < len; pos++)
		if (first_has(s, (unsigned char)p[pos]) &&
		    anchor_prefix(s, p + pos, len - pos))
			return len - pos;
	return 0;
}

int
scrub_mask_tail(const struct scrub *s, char *p, size_t len)
{
	const struct scrub_secret *e;

	if (len == 0)
		return -1;
	e = prefix_of(s, p, len);
	if (e == NULL)
		return -1;
	/* All of it: it may be the start of a short one, kept whole. */
	memset(p, '*', len);
	return e->se_index;
}
