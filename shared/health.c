/*
 * health.c - the readiness check (see health.h).
 */
#include "health.h"

void
health_ready(struct worker *w, const struct request_io *io, struct resp *r)
{
	(void)w;
	(void)io;
	resp_error(r, 501, "server_error", "not_implemented",
		   "not implemented yet", NULL);
}
