/*
 * util.c - error strings, strict integer parsing, capped buffers, clocks.
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *
cp_strerror(enum cp_err err)
{
	switch (err) {
	case CP_OK: return "ok";
	case CP_ERR_NOMEM: return "out of memory";
	case CP_ERR_TOOBIG: return "too large";
	case CP_ERR_BADREQ: return "bad request";
	case CP_ERR_HUP: return "client went away";
	case CP_ERR_IO: return "web server I/O error";
	case CP_ERR_REDIS: return "Redis error";
	case CP_ERR_UPSTREAM: return "upstream error";
	case CP_ERR_UPSTREAM_TIMEOUT: return "upstream timeout";
	case CP_ERR_UPSTREAM_TOOBIG: return "upstream headers too large";
	case CP_ERR_CURL_SETUP: return "libcurl refused an option";
	case CP_ERR_INVAL: return "invalid value";
	case CP_ERR_CONFIG: return "invalid configuration";
	}
	return "unknown error";
}

enum cp_err
parse_ll(const char *str, long long min, long long max, long long *out,
	 const char **errstr)
{
	char *end = NULL;
	long long v;

	if (str == NULL || *str == '\0') {
		*errstr = "empty";
		return CP_ERR_INVAL;
	}
	/* strtoll accepts leading spaces and a '+'; we do not. */
	if (!(*str == '-' || (*str >= '0' && *str <= '9'))) {
		*errstr = "not a number";
		return CP_ERR_INVAL;
	}
	errno = 0;
	v = strtoll(str, &end, 10);
	if (end == str || *end != '\0') {
		*errstr = "not a number";
		return CP_ERR_INVAL;
	}
	if ((errno == ERANGE && v == LLONG_MIN) || v < min) {
		*errstr = "too small";
		return CP_ERR_INVAL;
	}
	if ((errno == ERANGE && v == LLONG_MAX) || v > max) {
		*errstr = "too large";
		return CP_ERR_INVAL;
	}
	*out = v;
	return CP_OK;
}

void
buf_init(struct buf *b, size_t max)
{
	b->b_p = NULL;
	b->b_len = 0;
	b->b_cap = 0;
	b->b_max = max;
}

void
buf_reset(struct buf *b)
{
	b->b_len = 0;
	if (b->b_p != NULL)
		b->b_p[0] = '\0';
}

void
buf_free(struct buf *b)
{
	free(b->b_p);
	b->b_p = NULL;
	b->b_len = 0;
	b->b_cap = 0;
}

enum cp_err
buf_reserve(struct buf *b, size_t len)
{
	size_t need;
	size_t ncap;
	char *np;

	if (len > b->b_max || b->b_len > b->b_max - len)
		return CP_ERR_TOOBIG;
	need = b->b_len + len + 1;
	if (need > b->b_cap) {
		ncap = b->b_cap ? b->b_cap : 256;
		while (ncap < need)
			ncap *= 2;
		np = realloc(b->b_p, ncap);
		if (np == NULL)
			return CP_ERR_NOMEM;
		b->b_p = np;
		b->b_cap = ncap;
	}
	return CP_OK;
}

void
buf_commit(struct buf *b, size_t len)
{
	b->b_len += len;
	b->b_p[b->b_len] = '\0';
}

enum cp_err
buf_add(struct buf *b, const void *data, size_t len)
{
	enum cp_err err = buf_reserve(b, len);

	if (err)
		return err;
	if (len > 0)
		memcpy(b->b_p + b->b_len, data, len);
	buf_commit(b, len);
	return CP_OK;
}

enum cp_err
buf_adds(struct buf *b, const char *str)
{
	return buf_add(b, str, strlen(str));
}

enum cp_err
buf_printf(struct buf *b, const char *fmt, ...)
{
	char small[512];
	va_list ap;
	int n;
	char *big;
	enum cp_err err;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return CP_ERR_TOOBIG;
	if ((size_t)n < sizeof(small))
		return buf_add(b, small, (size_t)n);
	big = malloc((size_t)n + 1);
	if (big == NULL)
		return CP_ERR_NOMEM;
	va_start(ap, fmt);
	n = vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	err = n < 0 ? CP_ERR_TOOBIG : buf_add(b, big, (size_t)n);
	free(big);
	return err;
}

int64_t
mono_ns(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC cannot fail with a valid pointer on Linux. */
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * Opens the object name, created here if absent (O_EXCL, 0600, zero-
 * filled), else only if this user may trust it: its owner is our euid, it
 * is open to no one else, and its size is size. Size 0 is also taken (and
 * grown): a process of ours that has just created it and not yet grown
 * it, as this one would (growing to the same size twice changes
 * nothing). Returns the descriptor, or -1 with errbuf set.
 */
static int
shm_open_private(const char *name, size_t size, char *errbuf, size_t errsz)
{
	struct stat sb;
	int tries;
	int fd = -1;

	for (tries = 0; tries < 10 && fd < 0; tries++) {
		fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
			      0600);
		if (fd >= 0 || errno != EEXIST)
			break;
		/* Removed in between: create it again. */
		fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
		if (fd < 0 && errno != ENOENT)
			break;
	}
	if (fd < 0) {
		snprintf(errbuf, errsz, "shm_open %s: %s%s", name,
			 strerror(errno),
			 errno == EACCES ? " (an object of that name that "
					   "another user created?)"
					 : "");
		return -1;
	}
	if (fstat(fd, &sb) != 0) {
		snprintf(errbuf, errsz, "fstat %s: %s", name, strerror(errno));
		close(fd);
		return -1;
	}
	if (sb.st_uid != geteuid() || (sb.st_mode & 077) != 0 ||
	    !S_ISREG(sb.st_mode)) {
		snprintf(errbuf, errsz,
			 "shm object %s is owned by uid %ld, mode %04o (want "
			 "uid %ld, mode 0600): refused, its owner could forge "
			 "the state; remove it",
			 name, (long)sb.st_uid, (unsigned)(sb.st_mode & 07777),
			 (long)geteuid());
		close(fd);
		return -1;
	}
	if (sb.st_size != 0 && (uintmax_t)sb.st_size != size) {
		snprintf(errbuf, errsz,
			 "shm object %s is %jd bytes, not %zu: refused; "
			 "remove it",
			 name, (intmax_t)sb.st_size, size);
		close(fd);
		return -1;
	}
	/* Growing a fresh object zero-fills it. */
	if (sb.st_size == 0 && ftruncate(fd, (off_t)size) != 0) {
		snprintf(errbuf, errsz, "ftruncate %s: %s", name,
			 strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

void *
shm_map_private(const char *name, size_t size, char *errbuf, size_t errsz)
{
	void *p;
	int fd = shm_open_private(name, size, errbuf, errsz);

	if (fd < 0)
		return NULL;
	/* Populated now: no page fault (a few us each) on a later use. */
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
		 fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		snprintf(errbuf, errsz, "mmap %s: %s", name, strerror(errno));
		return NULL;
	}
	return p;
}

int
has_prefix_ci(const char *s, size_t slen, const char *prefix)
{
	size_t plen = strlen(prefix);

	return slen >= plen && strncasecmp(s, prefix, plen) == 0;
}

int
is_tchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

const char *
count_str(long long v, char *buf, size_t bufsz)
{
	if (v < 0)
		snprintf(buf, bufsz, "-");
	else
		snprintf(buf, bufsz, "%lld", v);
	return buf;
}
