/*
 * local.h - the per-host scheduler: what the workers of one host share when
 * Redis is out of reach (or not configured: REDIS_URL=none).
 *
 * A POSIX shared memory object, /cerebras-proxy-<fingerprint of REDIS_PREFIX
 * and REDIS_URL>-<uid>, holds the same
 * state the Redis script keeps (round-robin position, global and per-key
 * timelines, key cooldowns) on CLOCK_MONOTONIC, which every process of the
 * host shares. Every field is a lock-free atomic, and all-zero is a valid
 * initial state, so any worker may create the object and none has to
 * initialise it. It spaces requests per host only: N hosts without Redis
 * send N times the configured rate.
 */
#ifndef CP_LOCAL_H
#define CP_LOCAL_H

#include "config.h"
#include "sched.h"
#include "util.h"

struct local_state;

struct local_sched {
	const struct config *ls_cfg;  /* borrowed */
	struct local_state *ls_state; /* mapped, NULL until opened */
};

/* Maps (creating if needed) the host's shared state. */
enum cp_err local_open(struct local_sched *l, const struct config *cfg,
		       char *errbuf, size_t errsz);
void local_close(struct local_sched *l);

/*
 * Reserves a slot like the Redis script does; s_deadline_ns is set, and
 * s_at_us is the slot on CLOCK_MONOTONIC (us).
 */
void local_reserve(struct local_sched *l, struct slot *out);

/* Gives back an unused slot, like sched_release. */
void local_release(struct local_sched *l, const struct slot *sl);

/* Rests key for ms on this host (never shortens a rest). */
void local_cooldown(struct local_sched *l, int key, long ms);

#endif
