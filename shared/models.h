/*
 * models.h - GET /v1/models and /v1/models/{id}: Cerebras' list of
 * models, from a per-host cache kept MODELS_CACHE_S seconds.
 *
 * The list is fetched with GET {CEREBRAS_API_BASE}/models on the worker's
 * upstream handle (upstream_get), with the keys in turn (round-robin per
 * process, skipping those the scheduler has disabled; a key answered
 * 429 passes the request to the next one, and so does one answered 401
 * or 403, which the scheduler then disables as after a chat), and kept in a shared memory object of the host
 * (/dev/shm/cerebras-proxy-models-<fingerprint>-<euid>, 0600: every
 * worker process and thread of the host reads the same copy). It takes
 * no chat slot and no budget. MODELS_CACHE_S=0 keeps nothing: every
 * request asks Cerebras.
 *
 * Answers carry X-Cache: hit (from the cache), miss (Cerebras asked now)
 * or stale (the cache had expired and Cerebras could not give a new list,
 * or another request is fetching it), and Age (seconds since the fetch)
 * when they come from the cache. While one request refreshes an expired
 * list the others answer from the old one; after a failed refresh the
 * next attempt waits up to 30 s, the old list served meanwhile.
 *
 * One model: from the list when it is cached and fresh and names it, else
 * Cerebras' own answer to GET {models_url}/{id} (the id %-escaped),
 * relayed with its status (a 404 as a 404); if Cerebras fails, from the
 * stale list. An id must be 1 to 127 visible ASCII characters (else 400
 * invalid_model_id).
 *
 * Errors, when nothing cached can stand in: 502 upstream_unreachable
 * (Cerebras not reached), 504 upstream_timeout, 502 upstream_auth_failed
 * (every key refused: the body, which may quote a key, is not passed
 * on), 502 upstream_bad_answer (not JSON, not a list, or over 256 KiB);
 * another upstream error with a JSON body is relayed as it came. The
 * client token and Origin are checked first, as for chat (chat_access).
 * Each request logs one line: "models id=... client=... model=...
 * status=... cache=hit|miss|stale|- key=... upstream_status=...
 * total_ms=... outcome".
 */
#ifndef CP_MODELS_H
#define CP_MODELS_H

#include "proxy.h"
#include "respond.h"

#include <stddef.h>

/*
 * Answers GET (or HEAD) of the list (id NULL) or of one model (id, idlen
 * bytes, not NUL-terminated), and logs it.
 */
void models_handle(struct worker *w, const struct request_io *io,
		   struct resp *r, const char *id, size_t idlen);

/*
 * The cache's shared memory object name:
 * "/cerebras-proxy-models-<scheduler state fp>-<upstream and keys fp>-<euid>".
 */
void models_cache_name(const struct config *cfg, char *out, size_t outsz);

#endif
