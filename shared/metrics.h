/*
 * metrics.h - the host's counters, in shared memory, and GET /metrics
 * in the Prometheus text format.
 */
#ifndef CP_METRICS_H
#define CP_METRICS_H

#include "proxy.h"
#include "respond.h"

/* Answers GET (or HEAD) /metrics: 403 unless METRICS_ALLOW admits it. */
void metrics_handle(struct worker *w, const struct request_io *io,
		    struct resp *r);

#endif
