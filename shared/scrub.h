/*
 * scrub.h - masking known secrets in bytes on their way to a client.
 *
 * An upstream, or a gateway in front of it, may echo the Authorization
 * header it received into a response header or body. The proxy must never
 * hand an API key to a client, so whatever the upstream sends is scanned
 * for every configured secret and each occurrence is masked in place,
 * byte for byte ("sk-test-ALPHA-0001" becomes "******************", a long
 * key keeps its first SCRUB_KEEP bytes: "csk-***...***"), so lengths, and
 * with them Content-Length, stay right.
 *
 * Pure: no I/O, no logging; the caller says what was found. A struct
 * scrub is built once from a list of strings (the API keys now, client
 * tokens as well later) and is then read-only, so threads may share one.
 *
 * What it catches: every exact occurrence within the bytes given. Across
 * the pieces of a stream, scrub_hold() tells how many bytes at the end of
 * a piece could be the start of a secret, for the caller to hold back and
 * prepend to the next piece (upstream.c does), so a secret split between
 * two pieces is caught too:
 *
 *	h = scrub_hold(s, p, len);
 *	scrub_mask(s, p, len, len - h, NULL);  (those starting before)
 *	send p[0 .. len-h), keep p[len-h .. len) for the next piece
 *	at the end: scrub_mask the kept bytes, else scrub_mask_tail them
 *
 * Only secrets that start before the held tail are masked at once: one
 * that starts in it may still grow into a longer secret (a key that starts
 * with another), so the longest always wins, as for a whole buffer. What it does not catch: a secret transformed
 * (base64, URL- or JSON-escaped, upper-cased, reversed), cut short, or
 * interleaved with other bytes; secrets shorter than SCRUB_MIN_LEN bytes,
 * which are ignored (masking them would mangle ordinary text).
 *
 * Cost: a candidate position is one where a secret's first SCRUB_ANCHOR
 * bytes (its "anchor": "csk-" for every Cerebras key) occur. With at most
 * SCRUB_MEMMEM_MAX distinct anchors the scan is one memchr(3) per anchor
 * for its least common byte ('-'), with the anchor checked around each
 * hit; with more, one pass testing each position's 4 bytes against a
 * hashed filter of the anchors (about 1 ns a byte: give secrets a common
 * prefix). A candidate is checked with one binary search per distinct
 * secret length, so the number of secrets barely matters.
 */
#ifndef CP_SCRUB_H
#define CP_SCRUB_H

#include "util.h"

#include <stddef.h>
#include <stdint.h>

#define SCRUB_MIN_LEN	 8  /* shorter secrets are not scrubbed */
#define SCRUB_ANCHOR	 4  /* bytes of a secret's start used as a filter */
#define SCRUB_MEMMEM_MAX 4  /* distinct anchors scanned with memchr */
#define SCRUB_KEEP	 4  /* bytes left in clear at the start of ... */
#define SCRUB_KEEP_MIN	 24 /* ... a secret at least this long */

/* One secret: bytes borrowed from the caller's array. */
struct scrub_secret {
	const char *se_p; /* borrowed */
	size_t se_len;
	int se_index; /* its position in the array given to scrub_init */
};

struct scrub {
	/* owned; sorted by length (longest first), then by bytes */
	struct scrub_secret *sc_sec;
	size_t sc_nsec;
	/*
	 * owned: the distinct lengths, longest first; the secrets of length
	 * sc_lens[i] are sc_sec[sc_lstart[i]] .. sc_sec[sc_lstart[i + 1] - 1].
	 */
	size_t *sc_lens;
	size_t *sc_lstart; /* owned, sc_nlens + 1 entries */
	size_t sc_nlens;
	/* owned: the distinct anchors (first bytes of secrets), sorted */
	char (*sc_anchor)[SCRUB_ANCHOR];
	size_t sc_nanchor;
	/* up to SCRUB_MEMMEM_MAX anchors: each one's least common byte */
	unsigned char sc_rare[SCRUB_MEMMEM_MAX];
	/* owned, more anchors: a 2^16-bit filter of their hashes, or NULL */
	uint64_t *sc_hash;
	unsigned char sc_first[32]; /* bitmap: bytes a secret starts with */
	size_t sc_maxlen;	    /* the longest secret's length */
	int sc_skipped;		    /* secrets under SCRUB_MIN_LEN, ignored */
};

/*
 * Builds s from the n NUL-terminated strings secrets[0..n-1] (NULL
 * entries and strings shorter than SCRUB_MIN_LEN are skipped and counted
 * in sc_skipped). The strings are borrowed: they must outlive s. n may be
 * 0: s then finds nothing. Returns CP_OK, or CP_ERR_NOMEM and s holds
 * nothing to free.
 */
enum cp_err scrub_init(struct scrub *s, const char *const *secrets, int n);
void scrub_free(struct scrub *s);

/*
 * The index (in scrub_init's array) of a secret that occurs in p[0..len)
 * starting before offset starts (len: anywhere), or -1 if none does.
 * Reads only: for a caller that copies the bytes only when something is
 * to be masked.
 */
int scrub_find(const struct scrub *s, const char *p, size_t len, size_t starts);

/*
 * Masks every occurrence of a secret in p[0..len) that starts before
 * offset starts (len: all), in place and with as many bytes (the longest
 * secret wins where several start at one place). Returns how many were
 * masked; *first (if not NULL) is set to the index of the first one
 * found, -1 if none.
 */
size_t scrub_mask(const struct scrub *s, char *p, size_t len, size_t starts,
		  int *first);

/*
 * How many bytes at the end of p[0..len) are the start of a secret, that
 * is, could become one if more bytes followed (the longest such tail,
 * shorter than the longest secret; 0 for most text). A stream holds them
 * back until its next piece (see above).
 */
size_t scrub_hold(const struct scrub *s, const char *p, size_t len);

/*
 * Masks all of p[0..len), the start of a secret left over at the end of a
 * stream (scrub_hold). Returns the index of a secret p starts, or -1 (and
 * masks nothing) if p is no secret's start.
 */
int scrub_mask_tail(const struct scrub *s, char *p, size_t len);

#endif
