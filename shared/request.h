/*
 * request.h - the web server's side of one request, whatever the protocol.
 *
 * The front end (fcgi/) fills it for FastCGI (libfcgi streams) or plain
 * CGI (the process environment, stdin and stdout); everything in shared/
 * sees only this, so the handler does not know which protocol carries it
 * and never touches a socket of the front end's.
 */
#ifndef CP_REQUEST_H
#define CP_REQUEST_H

#include "util.h"

#include <stdint.h>

struct request_io {
	/* The CGI variable name (REQUEST_METHOD, HTTP_ORIGIN...), or NULL. */
	const char *(*io_param)(void *ctx, const char *name);
	/* Reads the body: > 0 bytes read, 0 at its end, < 0 on error. */
	int (*io_read)(void *ctx, char *buf, int len);
	/*
	 * Writes all of buf; with flush set, the bytes leave for the web
	 * server now. CP_OK, or CP_ERR_HUP if the connection is gone.
	 */
	enum cp_err (*io_write)(void *ctx, const char *buf, int len, int flush);
	/*
	 * Sends whatever io_write left buffered: the last write of the
	 * response. CP_OK, or CP_ERR_HUP if the connection is gone.
	 */
	enum cp_err (*io_finish)(void *ctx);
	/* 1 if the client has hung up, else 0 (also when it cannot tell). */
	int (*io_gone)(void *ctx);
	/*
	 * Waits until CLOCK_MONOTONIC reaches until_ns, or the client hangs
	 * up. 1 if it hung up, else 0. It may return 0 early (up to a few
	 * ms, or at once if it cannot watch the connection): the caller
	 * sleeps what is left, precisely.
	 */
	int (*io_wait_gone)(void *ctx, int64_t until_ns);
	void *io_ctx;
	/*
	 * CLOCK_MONOTONIC time the front end accepted the connection, or 0:
	 * what lies between it and the handler is the wait for a thread.
	 */
	int64_t io_accepted_ns;
};

#endif
