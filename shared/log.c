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
#include <time.h>
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

/* Set once by log_set_format, before any thread or worker starts. */
static int log_json;

void
log_set_format(int json)
{
	log_json = json != 0;
}

/*
 * JSON-escapes s[0..n) into out (room for outsz bytes, no quotes, no NUL):
 * '"' and '\\' by a backslash, control characters, DEL and bytes above
 * 0x7f as \u00XX, so the output is ASCII and valid JSON string content
 * whatever s holds. (Messages reach it neutralised, so in practice only
 * '"' and '\\' are escaped.) Writes whole escapes only; *used is set to
 * how much of s went out. Returns the length written.
 */
static size_t
json_escape(const char *s, size_t n, char *out, size_t outsz, size_t *used)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;
	size_t o = 0;
	unsigned char c;

	for (i = 0; i < n; i++) {
		c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			if (o + 2 > outsz)
				break;
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			if (o + 6 > outsz)
				break;
			memcpy(out + o, "\\u00", 4);
			out[o + 4] = hex[c >> 4];
			out[o + 5] = hex[c & 15];
			o += 6;
		} else {
			if (o + 1 > outsz)
				break;
			out[o++] = (char)c;
		}
	}
	*used = i;
	return o;
}

/* A bounded output buffer; an append that does not fit writes nothing. */
struct jbuf {
	char *jb_p; /* borrowed, jb_cap bytes */
	size_t jb_len;
	size_t jb_cap;
};

static int
jb_raw(struct jbuf *jb, const char *s, size_t n)
{
	if (n > jb->jb_cap - jb->jb_len)
		return -1;
	memcpy(jb->jb_p + jb->jb_len, s, n);
	jb->jb_len += n;
	return 0;
}

/* Appends ,"name":"value" (or a bare number, or null), whole or not at all. */
static int
jb_field(struct jbuf *jb, const char *name, size_t nlen, const char *v,
	 size_t vlen, int bare)
{
	size_t start = jb->jb_len;
	size_t used;

	if (jb_raw(jb, ",\"", 2) != 0 || jb_raw(jb, name, nlen) != 0 ||
	    jb_raw(jb, "\":", 2) != 0)
		goto fail;
	if (bare) {
		if (jb_raw(jb, v, vlen) != 0)
			goto fail;
		return 0;
	}
	if (jb_raw(jb, "\"", 1) != 0)
		goto fail;
	jb->jb_len += json_escape(v, vlen, jb->jb_p + jb->jb_len,
				  jb->jb_cap - jb->jb_len, &used);
	if (used < vlen || jb_raw(jb, "\"", 1) != 0)
		goto fail;
	return 0;
fail:
	jb->jb_len = start;
	return -1;
}

/* The length of a run of [a-z_] at s[0..n). */
static size_t
name_len(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n && ((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_'))
		i++;
	return i;
}

/*
 * Whether v[0..n) is a plain decimal number that JSON writes the same
 * way: -?(0|[1-9][0-9]*)(\.[0-9]+)?
 */
static int
is_json_number(const char *v, size_t n)
{
	size_t i = 0;
	size_t d;

	if (i < n && v[i] == '-')
		i++;
	for (d = i; i < n && v[i] >= '0' && v[i] <= '9'; i++)
		;
	if (i == d || (v[d] == '0' && i - d > 1))
		return 0;
	if (i < n && v[i] == '.') {
		for (d = ++i; i < n && v[i] >= '0' && v[i] <= '9'; i++)
			;
		if (i == d)
			return 0;
	}
	return i == n;
}

/* Names the line itself uses; a token with one of them stays in msg. */
static int
name_reserved(const char *s, size_t n)
{
	static const char *const reserved[] = {
		"ts", "level", "pid", "msg", "event", "outcome", "cut",
	};
	size_t i;

	for (i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
		if (strlen(reserved[i]) == n && memcmp(reserved[i], s, n) == 0)
			return 1;
	return 0;
}

#define LOG_MAX_FIELDS 48

/*
 * The fields of a request line m[0..n) (neutralised, so printable ASCII),
 * appended to jb as ,"event":...,"name":value...,"outcome":"...": a
 * leading event word, then name=value tokens (name [a-z_]+, the value up
 * to the next space; "-" is null, a plain decimal number a number except
 * for "id", anything else a string), then the rest of the text as the
 * outcome. A line that is not "word name=..." (start-up, warnings) adds
 * nothing. A reserved or repeated name (or one past the 48th) is left to
 * msg. A field that does not fit ends the fields. Returns 1 if something
 * was left out, else 0.
 */
static int
json_fields(struct jbuf *jb, const char *m, size_t n)
{
	const char *names[LOG_MAX_FIELDS];
	size_t nlens[LOG_MAX_FIELDS];
	size_t nfields = 0;
	size_t p;
	size_t ev;
	size_t k;
	size_t v;
	size_t vlen;
	size_t j;
	int dup;
	int is_null;
	int bare;

	ev = name_len(m, n);
	if (ev == 0 || ev >= n || m[ev] != ' ')
		return 0;
	k = name_len(m + ev + 1, n - ev - 1);
	if (k == 0 || ev + 1 + k >= n || m[ev + 1 + k] != '=')
		return 0;
	if (jb_field(jb, "event", 5, m, ev, 0) != 0)
		return 1;
	p = ev + 1;
	while (p < n) {
		k = name_len(m + p, n - p);
		if (k == 0 || p + k >= n || m[p + k] != '=')
			break;
		v = p + k + 1;
		for (vlen = 0; v + vlen < n && m[v + vlen] != ' '; vlen++)
			;
		dup = name_reserved(m + p, k) || nfields == LOG_MAX_FIELDS;
		for (j = 0; !dup && j < nfields; j++)
			dup = nlens[j] == k && memcmp(names[j], m + p, k) == 0;
		is_null = vlen == 1 && m[v] == '-';
		/* Ids are names, however they look. */
		bare = is_null || (is_json_number(m + v, vlen) &&
				   !(k == 2 && memcmp(m + p, "id", 2) == 0));
		if (!dup) {
			if (jb_field(jb, m + p, k, is_null ? "null" : m + v,
				     is_null ? 4 : vlen, bare) != 0)
				return 1;
			names[nfields] = m + p;
			nlens[nfields] = k;
			nfields++;
		}
		p = v + vlen;
		if (p < n)
			p++; /* the space */
	}
	if (p < n && jb_field(jb, "outcome", 7, m + p, n - p, 0) != 0)
		return 1;
	return 0;
}

/* The room kept for msg when the fields are long, in bytes. */
#define LOG_JSON_MSG_MIN 128

/*
 * One JSON object for the neutralised message m[0..n), with '\n', into
 * line: at most linesz bytes; returns its length (0: no room at all). The
 * fields come first, then msg gets the room left: a line too long has its
 * msg cut (between escapes, JSON's and the text form's \xHH) and
 * "cut":true, and is still one valid JSON object.
 */
static size_t
log_json_line(char *line, size_t linesz, enum log_level level, const char *m,
	      size_t n)
{
	char ts[40];
	char tail[1024];
	struct jbuf jb = {tail, 0, 0};
	struct timespec now;
	struct tm tm;
	size_t head;
	size_t room;
	size_t esc;
	size_t used;
	size_t len;
	size_t i;
	int cut;
	int r;

	if (clock_gettime(CLOCK_REALTIME, &now) == 0 &&
	    gmtime_r(&now.tv_sec, &tm) != NULL &&
	    strftime(ts, sizeof(ts), "\"%Y-%m-%dT%H:%M:%S", &tm) > 0) {
		len = strlen(ts);
		r = snprintf(ts + len, sizeof(ts) - len, ".%03ldZ\"",
			     (long)(now.tv_nsec / 1000000));
		if (r < 0 || (size_t)r >= sizeof(ts) - len)
			snprintf(ts, sizeof(ts), "null");
	} else {
		snprintf(ts, sizeof(ts), "null");
	}
	r = snprintf(line, linesz,
		     "{\"ts\":%s,\"level\":\"%s\",\"pid\":%ld,"
		     "\"msg\":\"",
		     ts, level_names[level], (long)getpid());
	if (r < 0 || (size_t)r + LOG_JSON_MSG_MIN + 16 > linesz)
		return 0;
	head = (size_t)r;
	/* Room for the fields: the line less head, msg's minimum, '"',
	 * ,"cut":true, '}' and '\n'. */
	jb.jb_cap = linesz - head - LOG_JSON_MSG_MIN - 14;
	if (jb.jb_cap > sizeof(tail))
		jb.jb_cap = sizeof(tail);
	cut = json_fields(&jb, m, n);
	room = linesz - head - jb.jb_len - 3; /* '"', '}', '\n' */
	esc = json_escape(m, n, line + head, room, &used);
	if (used < n || cut) {
		cut = 1;
		room -= 11; /* ,"cut":true */
		esc = json_escape(m, n, line + head, room, &used);
		/* Nor a \xHH of the text form cut in half. */
		for (i = used >= 3 ? used - 3 : 0; i < used; i++)
			if (m[i] == '\\' && i + 1 < n && m[i + 1] == 'x' &&
			    i + 4 > used)
				break;
		if (i < used)
			esc = json_escape(m, i, line + head, room, &used);
	}
	len = head + esc;
	line[len++] = '"';
	memcpy(line + len, tail, jb.jb_len);
	len += jb.jb_len;
	if (cut) {
		memcpy(line + len, ",\"cut\":true", 11);
		len += 11;
	}
	line[len++] = '}';
	line[len++] = '\n';
	return len;
}

/*
 * Formats one line and writes it at once. The message (and strerror) is
 * formatted first, then copied into the line through log_neutralise, so no
 * caller can put a line break or a terminal escape into the log, whatever
 * it passes. A message too long for the line is cut; the line still ends
 * in '\n'. With log_set_format(1) the line is one JSON object holding the
 * same neutralised message (log_json_line).
 */
static void
log_vline(enum log_level level, int with_errno, int saved_errno,
	  const char *fmt, va_list ap)
{
	char msg[1024];
	char line[1024];
	char neu[1024];
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
	if (log_json) {
		len = log_neutralise(msg, mlen, neu, sizeof(neu));
		len = log_json_line(line, sizeof(line) - 1, level, neu, len);
		if (len == 0)
			return;
		if (write(STDERR_FILENO, line, len) < 0)
			return;
		return;
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
