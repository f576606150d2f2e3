/*
 * models.c - the models endpoints (see models.h).
 */
#include "models.h"

void
models_handle(struct worker *w, const struct request_io *io, struct resp *r,
	      const char *id, size_t idlen)
{
	(void)w;
	(void)io;
	(void)id;
	(void)idlen;
	resp_error(r, 501, "server_error", "not_implemented",
		   "not implemented yet", NULL);
}
