/*
 * io.h - struct request_io (shared/request.h) over the two protocols the
 * web server may speak to us: FastCGI (libfcgi's streams) and plain CGI
 * (the environment, stdin and stdout).
 */
#ifndef CP_FCGI_IO_H
#define CP_FCGI_IO_H

#include "config.h"
#include "request.h"

#include <fcgiapp.h>

/*
 * Points io at the FastCGI request req, which must outlive io; set once per
 * thread, it serves every request FCGX_Accept_r puts in req.
 */
void fcgi_io_init(struct request_io *io, FCGX_Request *req);

/*
 * Serves the one request of a CGI invocation. Each invocation is a new
 * process: a new TLS connection upstream and a new Redis connection.
 * Returns an exit code.
 */
int cgi_main(const struct config *cfg);

#endif
