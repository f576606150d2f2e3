/*
 * health.h - GET /readyz: can this worker serve a request now?
 */
#ifndef CP_HEALTH_H
#define CP_HEALTH_H

#include "proxy.h"
#include "respond.h"

/*
 * 200 when the scheduler is usable and at least one key can be used now;
 * else 503 with a JSON reason.
 */
void health_ready(struct worker *w, const struct request_io *io,
		  struct resp *r);

#endif
