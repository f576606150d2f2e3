/*
 * request.h - the web server's side of one request, whatever the protocol.
 *
 * fcgi/main.c fills it for FastCGI (libfcgi streams) or plain CGI (the
 * process environment, stdin and stdout); everything in shared/ sees only
 * this, so the handler does not know which protocol carries it.
 */
#ifndef CP_REQUEST_H
#define CP_REQUEST_H

struct request_io {
	/* The CGI variable name (REQUEST_METHOD, HTTP_ORIGIN...), or NULL. */
	const char *(*io_param)(void *ctx, const char *name);
	/* Reads the body: > 0 bytes read, 0 at its end, < 0 on error. */
	int (*io_read)(void *ctx, char *buf, int len);
	/*
	 * Writes all of buf; with flush set, the bytes leave for the web
	 * server now. 0, or -1 if the connection is gone.
	 */
	int (*io_write)(void *ctx, const char *buf, int len, int flush);
	void *io_ctx;
	int io_fd; /* connection to poll for a client hang-up; -1 = none */
};

#endif
