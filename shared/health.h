/*
 * health.h - GET /readyz: can this worker serve a request now?
 */
#ifndef CP_HEALTH_H
#define CP_HEALTH_H

#include "proxy.h"
#include "respond.h"
#include "sched_view.h"

/* The readiness verdict; its name is the 503's error code. */
enum health_reason {
	HEALTH_READY,
	HEALTH_REDIS_UNREACHABLE, /* "redis_unreachable" */
	HEALTH_COOLING_DOWN,	  /* "all_keys_cooling_down" */
	HEALTH_DISABLED,	  /* "all_keys_disabled" */
};

/* "ready", "redis_unreachable", "all_keys_cooling_down", ... */
const char *health_reason_name(enum health_reason why);

/*
 * The verdict on sched_inspect's answer (err, v): not ready when it
 * failed (Redis unreachable under REDIS_FALLBACK=refuse, or the host's
 * state unavailable), or when no key is usable now: cooling down if any
 * of them rests, else disabled. *usable: the keys usable now;
 * *soonest_ms: when the first unusable one is back (0 if none). Pure.
 */
enum health_reason health_judge(enum cp_err err, const struct sched_view *v,
				int *usable, int64_t *soonest_ms);

/*
 * 200 {"status":"ready",...} when the scheduler is usable and at least
 * one key can be used now; else 503 with an OpenAI-style error whose code
 * is the reason (health_reason_name) and Retry-After. No client token
 * needed; Cache-Control: no-store.
 */
void health_ready(struct worker *w, const struct request_io *io,
		  struct resp *r);

#endif
