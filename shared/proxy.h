/*
 * proxy.h - one request, start to finish: route, read the body, reserve a
 * slot, wait for it, forward, relay.
 *
 * struct worker holds what a worker (process or thread) keeps across
 * requests: its Redis connection and its libcurl handle.
 */
#ifndef CP_PROXY_H
#define CP_PROXY_H

#include "config.h"
#include "request.h"
#include "sched.h"
#include "upstream.h"
#include "util.h"

struct worker {
	const struct config *w_cfg; /* borrowed */
	struct sched w_sched;
	struct upstream w_up;
	struct buf w_body; /* request body, reused */
	struct buf w_hdrs; /* forwarded request headers, reused */
	unsigned long w_served;
};

/*
 * Sets w up for cfg; on failure w holds nothing to free, and errbuf says
 * what failed.
 */
enum cp_err worker_init(struct worker *w, const struct config *cfg,
			char *errbuf, size_t errsz);
void worker_free(struct worker *w);

/*
 * Opens the Redis and upstream connections before the first request, so
 * that one pays no connect, script load or TLS handshake either.
 */
void worker_warm(struct worker *w);

/* Handles one request completely. */
void proxy_handle(struct worker *w, const struct request_io *io);

/*
 * Answers a request that found no free thread within QUEUE_MAX_WAIT_MS:
 * 429 proxy_saturated with Retry-After, after reading the body (a socket
 * closed with unread input may lose the answer). Needs no worker.
 */
void proxy_refuse_saturated(const struct config *cfg,
			    const struct request_io *io);

#endif
