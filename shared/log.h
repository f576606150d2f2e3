/*
 * log.h - one line per event on stderr.
 *
 * Every line starts with "cerebras-proxy[pid]: ". Anything a client sent is
 * passed through log_escape first. API keys never reach a log line: they are
 * named by index and key_fingerprint().
 */
#ifndef CP_LOG_H
#define CP_LOG_H

#include <stddef.h>

void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Like log_info, with ": strerror(errno)" appended. */
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Copies at most outsz-1 bytes of in to out, replacing control characters,
 * '"', '\\' and non-ASCII bytes by \xHH, so a client cannot forge log lines.
 * Returns out.
 */
char *log_escape(const char *in, char *out, size_t outsz);

/*
 * A short, non-reversible fingerprint of a secret: 8 hex digits of a 32-bit
 * FNV-1a hash. out must hold 9 bytes.
 */
void key_fingerprint(const char *key, char out[9]);

#endif
