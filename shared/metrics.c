/*
 * metrics.c - the host's counters and their exposition (see metrics.h).
 */
#include "metrics.h"

void
metrics_handle(struct worker *w, const struct request_io *io, struct resp *r)
{
	(void)w;
	(void)io;
	resp_error(r, 501, "server_error", "not_implemented",
		   "not implemented yet", NULL);
}
