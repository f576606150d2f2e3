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
 * Formats one line into a stack buffer and writes it at once. A message
 * too long for the buffer is cut; the line still ends in '\n'.
 */
static void
log_vline(enum log_level level, int with_errno, int saved_errno,
	  const char *fmt, va_list ap)
{
	char line[1024];
	int n;
	int m;
	size_t len;

	n = snprintf(line, sizeof(line),
		     "cerebras-proxy[%ld]: %s: ", (long)getpid(),
		     level_names[level]);
	if (n < 0)
		return;
	m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	if (m < 0)
		return;
	len = strnlen(line, sizeof(line) - 1);
	if (with_errno && len < sizeof(line) - 1) {
		m = snprintf(line + len, sizeof(line) - len, ": %s",
			     strerror(saved_errno));
		if (m < 0)
			return;
		len = strnlen(line, sizeof(line) - 1);
	}
	if (len >= sizeof(line) - 1)
		len = sizeof(line) - 2;
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
