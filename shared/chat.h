/*
 * chat.h - one chat request: read, check, reserve a slot, wait for it,
 * forward (on another key if the verdict says so), finish.
 */
#ifndef CP_CHAT_H
#define CP_CHAT_H

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

#endif
