/*
 * fuzz.h - helpers shared by the libFuzzer targets (tests/fuzz/fuzz_*.c).
 *
 * Each target is one C file with LLVMFuzzerTestOneInput, linked with the
 * project's shared/ objects built with the same sanitizers (make fuzz,
 * build-fuzz/). A target copies what it hands to the code under test into
 * buffers of exactly the right size, so AddressSanitizer sees a read one
 * byte past the end. A broken invariant calls fuzz_fail(), which aborts:
 * libFuzzer then saves the input like any crash.
 */
#ifndef CP_FUZZ_H
#define CP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define fuzz_fail(...)                                                         \
	do {                                                                   \
		fprintf(stderr, "fuzz invariant: " __VA_ARGS__);               \
		fputc('\n', stderr);                                           \
		abort();                                                       \
	} while (0)

/* A malloc'd copy of n bytes, NUL-terminated (owned by the caller). */
static inline char *
fuzz_strndup(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s == NULL)
		abort();
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

/* A malloc'd copy of exactly n bytes, no terminator (at least 1 byte). */
static inline char *
fuzz_memdup(const uint8_t *p, size_t n)
{
	char *s = malloc(n ? n : 1);

	if (s == NULL)
		abort();
	if (n)
		memcpy(s, p, n);
	return s;
}

/*
 * Splits data at '\n' into at most max fields, each a NUL-terminated
 * malloc'd string (any '\0' inside ends the C string early, as it would
 * for a CGI variable); the last field takes the rest. Returns how many
 * were found; the others are NULL. Free with fuzz_free_fields.
 */
static inline size_t
fuzz_fields(const uint8_t *data, size_t size, char **out, size_t max)
{
	size_t n = 0;
	size_t start = 0;
	size_t i;

	for (i = 0; i < max; i++)
		out[i] = NULL;
	if (max == 0)
		return 0;
	for (i = 0; i < size && n + 1 < max; i++) {
		if (data[i] != '\n')
			continue;
		out[n++] = fuzz_strndup(data + start, i - start);
		start = i + 1;
	}
	out[n++] = fuzz_strndup(data + start, size - start);
	return n;
}

static inline void
fuzz_free_fields(char **f, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(f[i]);
}

#endif
