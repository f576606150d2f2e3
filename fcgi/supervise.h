/*
 * supervise.h - the --processes supervisor: a fixed number of worker
 * processes on one listening socket.
 */
#ifndef CP_FCGI_SUPERVISE_H
#define CP_FCGI_SUPERVISE_H

#include "config.h"

/*
 * Keeps n workers (worker_main) running on listen_fd; replaces any that
 * die, at most one a second while they keep dying. On SIGTERM/SIGINT
 * stops them (SIGTERM, then SIGKILL once DRAIN_TIMEOUT_MS and a second
 * more have passed) and returns 0; 1 if it could not start. SIGTERM,
 * SIGINT and SIGCHLD are left blocked.
 */
int supervise(const struct config *cfg, int listen_fd, int n);

#endif
