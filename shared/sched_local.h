/*
 * sched_local.h - the per-host scheduler: what the workers of one host
 * share when Redis is out of reach (or not configured: REDIS_URL=none).
 * Used through sched.h.
 *
 * A POSIX shared memory object (sched_local_name) holds the state
 * shared/lua/reserve.lua keeps in Redis (round-robin position, global and
 * per-key timelines, key rests) on CLOCK_MONOTONIC, which every process of
 * the host shares, and the same algorithm runs on it under a lock held
 * for a few hundred nanoseconds. All-zero is a valid initial state, so
 * any worker may create the object and none has to initialise it. It
 * spaces requests per host only: N hosts without Redis send N times the
 * configured rate.
 */
#ifndef CP_SCHED_LOCAL_H
#define CP_SCHED_LOCAL_H

#include "config.h"
#include "slot.h"
#include "util.h"

#include <stdint.h>

struct sched_local_state;

struct sched_local {
	const struct config *sl_cfg;	    /* borrowed */
	struct sched_local_state *sl_state; /* mapped, NULL until opened */
	int64_t (*sl_now)(void); /* the clock: mono_ns; tests inject */
};

/*
 * The shared memory object's name, "/cerebras-proxy-<fingerprint>-<euid>":
 * one per proxy (REDIS_PREFIX, REDIS_URL and the state's layout) and user.
 */
void sched_local_name(const struct config *cfg, char *out, size_t outsz);

/* Maps (creating if needed) the host's shared state. */
enum cp_err sched_local_open(struct sched_local *l, const struct config *cfg,
			     char *errbuf, size_t errsz);
void sched_local_close(struct sched_local *l);

/*
 * Reserves a slot as reserve.lua does, on the host's clock: s_at_us is
 * the slot on CLOCK_MONOTONIC (us), s_deadline_ns the same in ns.
 */
void sched_local_reserve(struct sched_local *l, const struct sched_request *rq,
			 struct slot *out);

/*
 * Settles a slot's charge as settle.lua does: mode "release" (never
 * sent: unbooked, charge given back), "answer" or "usage" with o (NULL
 * for a release). Returns settle.lua's answer.
 */
int sched_local_settle(struct sched_local *l, const struct slot *sl,
		       const char *mode, const struct sched_outcome *o);

/* Rests key for ms on this host (never shortens a rest). */
void sched_local_rest(struct sched_local *l, int key, long ms);

#endif
