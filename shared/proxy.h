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
#include "local.h"
#include "request.h"
#include "sched.h"
#include "upstream.h"
#include "util.h"

struct worker {
	const struct config *w_cfg; /* borrowed */
	struct sched w_sched;
	struct local_sched w_local; /* per-host fallback */
	int64_t w_redis_retry_ns;   /* no Redis attempt before this */
	int64_t w_redis_backoff_ns; /* 0 while Redis answers */
	int64_t w_redis_logged_ns;  /* last "Redis unavailable" line */
	int w_slot_local;	    /* the current slot came from w_local */
	struct upstream w_up;
	struct buf w_body; /* request body, reused */
	struct buf w_hdrs; /* forwarded request headers, reused */
	unsigned long w_served;
};

enum cp_err worker_init(struct worker *w, const struct config *cfg);
void worker_free(struct worker *w);

/*
 * Opens the Redis and upstream connections before the first request, so
 * that one pays no connect, script load or TLS handshake either.
 */
void worker_warm(struct worker *w);

/* Handles one request completely. */
void proxy_handle(struct worker *w, const struct request_io *io);

#endif
