/*
 * util.h - the project's error codes, number parsing, capped buffers, clocks.
 *
 * Pure helpers shared by every module; nothing here does network I/O.
 */
#ifndef CP_UTIL_H
#define CP_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* The number of elements of an array (not a pointer). */
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* One error enum for the project; 0 is success. */
enum cp_err {
	CP_OK = 0,
	CP_ERR_NOMEM,	 /* allocation failed */
	CP_ERR_TOOBIG,	 /* a capped buffer or input would exceed its cap */
	CP_ERR_BADREQ,	 /* the client sent something we refuse */
	CP_ERR_HUP,	 /* the client went away: not a failure to log */
	CP_ERR_IO,	 /* reading from or writing to the web server failed */
	CP_ERR_REDIS,	 /* Redis unreachable or answered an error */
	CP_ERR_UPSTREAM, /* upstream unreachable or broke the transfer */
	CP_ERR_UPSTREAM_TIMEOUT, /* upstream did not answer in time */
	CP_ERR_UPSTREAM_TOOBIG,	 /* upstream header block over the cap */
	CP_ERR_CURL_SETUP,	 /* libcurl refused an option */
	CP_ERR_INVAL,  /* a value is malformed or out of range (parse_ll) */
	CP_ERR_CONFIG, /* a setting is invalid: stop at start */
};

const char *cp_strerror(enum cp_err err);

/*
 * Parses the whole of str as a base-10 integer within [min, max].
 * Returns CP_OK and sets *out, or CP_ERR_INVAL with *errstr set to a static
 * reason ("empty", "not a number", "too small", "too large") and *out left
 * alone.
 */
enum cp_err parse_ll(const char *str, long long min, long long max,
		     long long *out, const char **errstr);

/*
 * A growable byte buffer with a hard cap chosen at creation (like curl's
 * dynbuf). Owned by whoever holds the struct; buf_free releases it.
 * p is always NUL-terminated when non-NULL.
 */
struct buf {
	char *b_p;
	size_t b_len;
	size_t b_cap;
	size_t b_max; /* buf_add fails with CP_ERR_TOOBIG beyond this */
};

void buf_init(struct buf *b, size_t max);
void buf_reset(struct buf *b); /* length 0, keeps the memory */
void buf_free(struct buf *b);
enum cp_err buf_add(struct buf *b, const void *data, size_t len);
/*
 * Makes room for len more bytes (and the NUL) at b_p + b_len, for the
 * caller to fill and then count with buf_commit(b, n), n <= len.
 */
enum cp_err buf_reserve(struct buf *b, size_t len);
void buf_commit(struct buf *b, size_t len);
enum cp_err buf_adds(struct buf *b, const char *str);
enum cp_err buf_printf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t mono_ns(void);

/* A count as text for logs and tables: "12", or "-" when unknown (< 0). */
const char *count_str(long long v, char *buf, size_t bufsz);

/*
 * Maps the POSIX shared memory object name (size bytes, read-write,
 * MAP_SHARED, populated), creating it if absent: O_EXCL, mode 0600,
 * zero-filled, so all-zero must be a valid initial state of what it
 * holds. An existing object is refused unless this user may trust it:
 * owned by our euid, open to no one else, a regular object of size bytes
 * (or 0, being created by another process: grown here). Returns the
 * mapping (munmap it with size), or NULL with errbuf saying why.
 */
void *shm_map_private(const char *name, size_t size, char *errbuf,
		      size_t errsz);

/* Case-insensitive ASCII prefix test; returns 1 if s starts with prefix. */
int has_prefix_ci(const char *s, size_t slen, const char *prefix);

/*
 * Returns 1 if c may appear in an HTTP token (RFC 9110 5.6.2 tchar: a
 * header name, a method), 0 otherwise ('\0' included).
 */
int is_tchar(char c);

#endif
