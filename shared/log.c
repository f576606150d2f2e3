/*
 * log.c - stderr logging (one write(2) per line, so lines from several
 * processes sharing one file do not interleave).
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

enum log_level {
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARNING,
	LOG_LEVEL_ERROR,
};

static const char *const level_names[] = {
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_WARNING] = "warning",
	[LOG_LEVEL_ERROR] = "error",
};

/*
 * Copies the message msg[0..n) to out (room for outsz bytes, no NUL) with
 * every byte that could end or disguise a line written as \xHH: control
 * characters (CR, LF, ESC of a terminal sequence...), DEL and every byte
 * above 0x7f (C1 controls in 8-bit terminals, U+0085 and U+2028 in UTF-8,
 * which some viewers break lines at). '"' and '\\' stay as they are:
 * log_escape'd values already write them as \xHH, and the line's own
 * quotes must survive. An escape is never cut in half. Returns the length.
 */
static size_t
log_neutralise(const char *msg, size_t n, char *out, size_t outsz)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;
	size_t o = 0;
	unsigned char c;

	for (i = 0; i < n; i++) {
		c = (unsigned char)msg[i];
		if (c >= 0x20 && c < 0x7f) {
			if (o + 1 > outsz)
				break;
			out[o++] = (char)c;
			continue;
		}
		if (o + 4 > outsz)
			break;
		out[o++] = '\\';
		out[o++] = 'x';
		out[o++] = hex[c >> 4];
		out[o++] = hex[c & 15];
	}
	return o;
}

/*
 * Formats one line and writes it at once. The message (and strerror) is
 * formatted first, then copied into the line through log_neutralise, so no
 * caller can put a line break or a terminal escape into the log, whatever
 * it passes. A message too long for the line is cut; the line still ends
 * in '\n'.
 */
static void
log_vline(enum log_level level, int with_errno, int saved_errno,
	  const char *fmt, va_list ap)
{
	char msg[1024];
	char line[1024];
	int n;
	int m;
	size_t len;
	size_t mlen;

	m = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (m < 0)
		return;
	mlen = strnlen(msg, sizeof(msg) - 1);
	if (with_errno && mlen < sizeof(msg) - 1) {
		m = snprintf(msg + mlen, sizeof(msg) - mlen, ": %s",
			     strerror(saved_errno));
		if (m < 0)
			return;
		mlen = strnlen(msg, sizeof(msg) - 1);
	}
	n = snprintf(line, sizeof(line),
		     "cerebras-proxy[%ld]: %s: ", (long)getpid(),
		     level_names[level]);
	if (n < 0 || (size_t)n >= sizeof(line) - 2)
		return;
	/* At most 1023 bytes with the '\n', as before the escaping. */
	len = (size_t)n +
	      log_neutralise(msg, mlen, line + n, sizeof(line) - 2 - (size_t)n);
	line[len++] = '\n';
	/* Nothing sensible to do if stderr is gone. */
	if (write(STDERR_FILENO, line, len) < 0)
		return;
}

/* log_vline with errno as the caller left it, in the line and after. */
static void
log_emit(enum log_level level, int with_errno, const char *fmt, va_list ap)
{
	int saved = errno;

	log_vline(level, with_errno, saved, fmt, ap);
	errno = saved;
}

void
log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_INFO, 0, fmt, ap);
	va_end(ap);
}

void
log_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_WARNING, 1, fmt, ap);
	va_end(ap);
}

void
log_warnx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_WARNING, 0, fmt, ap);
	va_end(ap);
}

void
log_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_ERROR, 1, fmt, ap);
	va_end(ap);
}

void
log_errx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_ERROR, 0, fmt, ap);
	va_end(ap);
}

char *
log_escape(const char *in, char *out, size_t outsz)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	unsigned char c;

	if (outsz == 0)
		return out;
	for (; in != NULL && *in != '\0'; in++) {
		c = (unsigned char)*in;
		if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
			if (o + 4 >= outsz)
				break;
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		} else {
			if (o + 1 >= outsz)
				break;
			out[o++] = (char)c;
		}
	}
	out[o] = '\0';
	return out;
}

void
key_fingerprint(const char *key, char out[9])
{
	uint32_t h = 2166136261u;

	for (; *key != '\0'; key++) {
		h ^= (unsigned char)*key;
		h *= 16777619u;
	}
	snprintf(out, 9, "%08x", h);
}
