/*
 * io.c - the front end's half of each request: struct request_io for
 * FastCGI (an FCGX_Request's streams and connection) and for plain CGI
 * (the process environment, stdin and stdout), and the CGI entry point.
 * The handler in shared/ sees only the struct.
 */
#include "io.h"

#include "log.h"
#include "proxy.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* FastCGI: libfcgi's streams. ctx is the FCGX_Request. */
static const char *
fcgi_param(void *ctx, const char *name)
{
	FCGX_Request *req = ctx;

	return FCGX_GetParam(name, req->envp);
}

static int
fcgi_read(void *ctx, char *buf, int len)
{
	FCGX_Request *req = ctx;
	int n = FCGX_GetStr(buf, len, req->in);

	if (n == 0 && FCGX_GetError(req->in) != 0)
		return -1;
	return n;
}

static enum cp_err
fcgi_write(void *ctx, const char *buf, int len, int flush)
{
	FCGX_Request *req = ctx;

	if (FCGX_PutStr(buf, len, req->out) != len)
		return CP_ERR_HUP;
	/*
	 * FCGX_FFlush sends one FCGI_STDOUT record now. After a failure the
	 * stream is marked closed and later flushes "succeed": check the
	 * stream's error too.
	 */
	if (flush &&
	    (FCGX_FFlush(req->out) != 0 || FCGX_GetError(req->out) != 0))
		return CP_ERR_HUP;
	return CP_OK;
}

/*
 * Closes the response streams as FCGX_Finish_r would (which then finds
 * them closed), so what is buffered, the end of the stream and
 * FCGI_END_REQUEST leave in one write, and its failure is seen here,
 * before the request is logged. stderr first: closing stdout first costs
 * a write more (fcgiapp.h).
 */
static enum cp_err
fcgi_finish(void *ctx)
{
	FCGX_Request *req = ctx;

	(void)FCGX_FClose(req->err);
	if (FCGX_FClose(req->out) != 0)
		return CP_ERR_HUP;
	return CP_OK;
}

/*
 * Whether the web server closed the connection (the client left: nginx
 * closes the FastCGI connection then). poll, no wait.
 */
static int
fcgi_gone(void *ctx)
{
	FCGX_Request *req = ctx;
	struct pollfd p;
	char c;
	ssize_t n;

	p.fd = req->ipcFd;
	p.events = POLLIN | POLLRDHUP;
	p.revents = 0;
	if (p.fd < 0 || poll(&p, 1, 0) <= 0)
		return 0;
	if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
		return 1;
	/*
	 * The web server sends nothing after the request body, so data
	 * here can only be the end of the connection; peek to be sure.
	 */
	n = recv(p.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
			  errno != EINTR);
}

/*
 * Watches the connection for a hang-up until until_ns. Anything else
 * that makes it readable ends the watch early (returns 0): a busy fd is
 * not polled in a loop.
 */
static int
fcgi_wait_gone(void *ctx, int64_t until_ns)
{
	FCGX_Request *req = ctx;
	struct timespec ts;
	struct pollfd p;
	int64_t left;
	int rc;

	while ((left = until_ns - mono_ns()) > 0) {
		ts.tv_sec = (time_t)(left / 1000000000);
		ts.tv_nsec = (long)(left % 1000000000);
		p.fd = req->ipcFd;
		p.events = POLLRDHUP;
		p.revents = 0;
		rc = ppoll(&p, 1, &ts, NULL);
		if (rc < 0 && errno != EINTR)
			return 0;
		if (rc > 0)
			return fcgi_gone(ctx);
	}
	return 0;
}

void
fcgi_io_init(struct request_io *io, FCGX_Request *req)
{
	memset(io, 0, sizeof(*io));
	io->io_param = fcgi_param;
	io->io_read = fcgi_read;
	io->io_write = fcgi_write;
	io->io_finish = fcgi_finish;
	io->io_gone = fcgi_gone;
	io->io_wait_gone = fcgi_wait_gone;
	io->io_ctx = req;
}

/* Plain CGI: the environment, stdin and stdout (unbuffered). */
static int
cgi_read(void *ctx, char *buf, int len)
{
	ssize_t n;

	(void)ctx;
	do
		n = read(STDIN_FILENO, buf, (size_t)len);
	while (n < 0 && errno == EINTR);
	return (int)n;
}

static enum cp_err
cgi_write(void *ctx, const char *buf, int len, int flush)
{
	ssize_t n;

	(void)ctx;
	(void)flush; /* write(2) leaves nothing behind to flush */
	while (len > 0) {
		n = write(STDOUT_FILENO, buf, (size_t)len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return CP_ERR_HUP;
		buf += n;
		len -= (int)n;
	}
	return CP_OK;
}

static enum cp_err
cgi_finish(void *ctx)
{
	(void)ctx; /* cgi_write leaves nothing behind */
	return CP_OK;
}

/* A CGI program cannot watch its client: the web server holds it. */
static int
cgi_gone(void *ctx)
{
	(void)ctx;
	return 0;
}

static int
cgi_wait_gone(void *ctx, int64_t until_ns)
{
	(void)ctx;
	(void)until_ns;
	return 0;
}

int
cgi_main(const struct config *cfg)
{
	struct worker w;
	struct request_io io;
	char errbuf[256];

	if (worker_init(&w, cfg, errbuf, sizeof(errbuf)) != CP_OK) {
		log_warnx("worker setup failed: %s", errbuf);
		return 1;
	}
	memset(&io, 0, sizeof(io));
	io.io_param = config_cgi_param;
	io.io_read = cgi_read;
	io.io_write = cgi_write;
	io.io_finish = cgi_finish;
	io.io_gone = cgi_gone;
	io.io_wait_gone = cgi_wait_gone;
	proxy_handle(&w, &io);
	worker_free(&w);
	return 0;
}
