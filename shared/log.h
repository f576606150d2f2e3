/*
 * log.h - one line per event on stderr.
 *
 * Every line is
 *
 *	cerebras-proxy[PID]: LEVEL: MESSAGE
 *
 * with LEVEL one of the syslog severity names journalctl -p and nginx's
 * error_log use, lower case:
 *   info     normal operation: start-up, one line per chat request
 *            (log_info);
 *   warning  something failed and the program carries on: Redis down, a
 *            key refused upstream, a worker restarted (log_warn, log_warnx);
 *   error    the program or a worker cannot go on and is about to exit
 *            (log_err, log_errx).
 * For example:
 *
 *	cerebras-proxy[4242]: info: Initialized with 3 API keys.
 *	cerebras-proxy[4242]: warning: Redis reserve unavailable (...): ...
 *	cerebras-proxy[4242]: error: --listen: bind /run/cp.sock: Address
 *	    already in use          (one line; wrapped here)
 *
 * so `grep -E ': (warning|error): '` finds what needs attention. Each line
 * goes out in one write(2) of at most 1024 bytes (longer messages are cut),
 * so lines of processes and threads sharing stderr do not interleave.
 * errno is preserved. The writer itself writes every control character,
 * DEL and byte above 0x7f of the message as \xHH, so no value, whoever
 * forgot to escape it, can end a line early, forge the next one or send a
 * terminal escape sequence. Anything a client sent is still passed through
 * log_escape first, which also escapes '"' and '\\', so a value cannot
 * pass for an escape or close a quoted field. API keys never reach a log
 * line: they are named by index and key_fingerprint().
 *
 * With log_set_format(1) (LOG_FORMAT=json) each line is instead one JSON
 * object, in the same single write(2) of at most 1023 bytes:
 *
 *	{"ts":"2026-11-30T07:33:11.123Z","level":"info","pid":4242,
 *	 "msg":"chat id=req-1 key=#0(1a2b3c4d) ... waited_for=- ok",
 *	 "event":"chat","id":"req-1","key":"#0(1a2b3c4d)",...,
 *	 "waited_for":null,"outcome":"ok"}          (one line; wrapped here)
 *
 * ts is RFC 3339 UTC with milliseconds, level and msg are the text form's
 * (msg neutralised the same way, \xHH and all, then JSON-escaped). A
 * request line, "word name=value name=value ... rest", also gets "event"
 * (the word), one member per name=value token (the value up to the next
 * space: "-" is null, a plain decimal number a number, except for "id",
 * which stays a string, anything else a string) and "outcome" (the rest).
 * A line too long for 1023 bytes keeps its fields, has its msg cut and
 * gains "cut":true; it is still one valid JSON object.
 */
#ifndef CP_LOG_H
#define CP_LOG_H

#include <stddef.h>

/*
 * 0 (the default): the text lines above; 1: one JSON object per line.
 * Called once at start, before any thread or worker process starts.
 */
void log_set_format(int json);

void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A warning, with ": strerror(errno)" appended. */
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A warning, as given. */
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An error, with ": strerror(errno)" appended. Does not exit. */
void log_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An error, as given. Does not exit. */
void log_errx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

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
