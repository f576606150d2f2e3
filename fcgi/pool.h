/*
 * pool.h - one worker process: its accepting threads, and the drain on
 * SIGTERM.
 */
#ifndef CP_FCGI_POOL_H
#define CP_FCGI_POOL_H

#include "config.h"

/*
 * Serves requests on listen_fd with cfg->threads accepting threads until
 * SIGTERM or SIGINT; then lets running requests finish, for up to
 * DRAIN_TIMEOUT_MS. Returns an exit code: 0 after a drain, 1 if the
 * process could not start serving or every thread stopped accepting.
 * Either signal may already be blocked and pending when it is called: it
 * is then taken as soon as the threads run.
 */
int worker_main(const struct config *cfg, int listen_fd);

#endif
