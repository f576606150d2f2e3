/*
 * models.h - GET /v1/models and /v1/models/{id}: Cerebras' list of
 * models, from a per-host cache kept MODELS_CACHE_S seconds.
 */
#ifndef CP_MODELS_H
#define CP_MODELS_H

#include "proxy.h"
#include "respond.h"

#include <stddef.h>

/*
 * Answers GET (or HEAD) of the list (id NULL) or of one model (id, idlen
 * bytes).
 */
void models_handle(struct worker *w, const struct request_io *io,
		   struct resp *r, const char *id, size_t idlen);

#endif
