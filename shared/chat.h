/*
 * chat.h - one chat request: read, check, reserve a slot, wait for it,
 * forward (on another key if the verdict says so), finish.
 */
#ifndef CP_CHAT_H
#define CP_CHAT_H

#include "clients.h"
#include "proxy.h"
#include "reqbody.h"
#include "respond.h"

/*
 * Serves a chat request (or, kind REQBODY_COMPLETION, a legacy text
 * completion: the same path to /completions) completely, its answer and
 * its log line.
 */
void chat_handle(struct worker *w, const struct request_io *io, struct resp *r,
		 enum reqbody_kind kind);

/* The longest client X-Request-Id kept (chat_request_id). */
#define CHAT_REQUEST_ID_MAX 128

/*
 * The request's id into out (CHAT_REQUEST_ID_MAX + 1 bytes): the
 * client's X-Request-Id when it is sane (1 to 128 of letters, digits and
 * "._:@+/=-": a UUID, a ULID, a trace id), else "req-" and 24 random hex
 * digits. It goes upstream, back to the client and into every log line
 * about the request.
 */
void chat_request_id(const struct request_io *io, char *out);

/*
 * Whether the request may use the proxy, checked before anything is read
 * or spent: its Origin (CORS_ALLOW_ORIGINS a list) and its client token
 * (when tokens are configured; clients.h). CP_OK with cl filled. Else
 * the refusal is answered on r (403 origin_not_allowed, or 401
 * invalid_proxy_token with WWW-Authenticate: Bearer), the request body
 * is read and dropped, *code (static) and detail (escaped) say why for
 * the caller's log line, and CP_ERR_BADREQ is returned.
 */
enum cp_err chat_access(const struct config *cfg, const struct request_io *io,
			struct resp *r, struct client *cl, const char **code,
			char *detail, size_t detailsz);

#endif
