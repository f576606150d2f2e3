/*
 * sched_local.h - the per-host scheduler: what the workers of one host
 * share when Redis is out of reach (or not configured: REDIS_URL=none).
 * Used through sched.h.
 *
 * A POSIX shared memory object (sched_local_name) holds what
 * shared/lua/reserve.lua and settle.lua keep in Redis: the round-robin
 * position, the key rests, the booked slots of the global and per-key
 * timelines, and each (organisation, model)'s budgets (six continuously
 * refilling buckets, the probe and rest times, the charge counters). The
 * same two algorithms run on it, step for step, on CLOCK_MONOTONIC, which
 * every process of the host shares, under a lock held for microseconds
 * (no system call, no allocation). The tables are bounded: 256 budgets,
 * the least recently used forgotten when a new one is needed (it probes
 * again), and a budget unused for a day is absent, as the Redis hash
 * expires; a timeline with no room left answers SLOT_TOO_FAR. Clients'
 * rate buckets and seats likewise: 256 clients (the least recently used
 * forgotten: its bucket full again, its seats free), 64 seats each (a
 * higher CLIENT_MAX_CONCURRENT is 64 here). With Redis, the object also
 * holds the host's estimate of Redis' clock (sched_local_clock). All-zero
 * is a valid initial state, so any worker may create the object and none
 * has to initialise it. It spaces and budgets requests per host only: N
 * hosts without Redis send N times the configured rate, and each learns
 * the organisations' levels from its own answers.
 */
#ifndef CP_SCHED_LOCAL_H
#define CP_SCHED_LOCAL_H

#include "clock_sync.h"
#include "config.h"
#include "sched_view.h"
#include "slot.h"
#include "util.h"

#include <stdint.h>

struct sched_local_state;

/* The most slots booked at once on the global timeline, and per key. */
#define SCHED_LOCAL_SLOTS     8192
#define SCHED_LOCAL_KEY_SLOTS 256

struct sched_local {
	const struct config *sl_cfg;	    /* borrowed */
	struct sched_local_state *sl_state; /* mapped, NULL until opened */
	int64_t (*sl_now)(void); /* the clock: mono_ns; tests inject */
	/* today, in days since 1970 (UTC); NULL: the wall clock's */
	int64_t (*sl_day)(void);
};

/*
 * The shared memory object's name, "/cerebras-proxy-<fingerprint>-<euid>":
 * one per proxy (REDIS_PREFIX, REDIS_URL and the state's layout) and user.
 */
void sched_local_name(const struct config *cfg, char *out, size_t outsz);

/*
 * The name of another of the host's objects tied to this state, with the
 * same fingerprint, so that what removes one finds all:
 * "/cerebras-proxy-<kind><fingerprint><tail>-<euid>".
 */
void sched_local_name_for(const struct config *cfg, const char *kind,
			  const char *tail, char *out, size_t outsz);

/* The shared memory object's size (the state's). */
size_t sched_local_size(void);

/*
 * Maps (creating if needed) the host's shared state. An object of that
 * name that this user did not create is refused (errbuf names it, its
 * owner and mode): one owned by another uid, open to group or others, or
 * of another size would let its owner forge the state or, by truncating
 * it, crash the workers (SIGBUS).
 */
enum cp_err sched_local_open(struct sched_local *l, const struct config *cfg,
			     char *errbuf, size_t errsz);
void sched_local_close(struct sched_local *l);

/*
 * Reserves a slot for rq as reserve.lua does, on the host's clock: the
 * same results (s_key a key or SLOT_ALL_RESTING, SLOT_TOO_FAR, SLOT_POLL
 * while a probe is out or tokens still out may come back, SLOT_CLIENT
 * over rq's client's rate or concurrency; s_why, s_probe,
 * s_cq/s_ct/s_rt), s_at_us the slot on CLOCK_MONOTONIC (us),
 * s_deadline_ns the same in ns. rq is borrowed by out (s_req) and must
 * outlive it.
 */
void sched_local_reserve(struct sched_local *l, const struct sched_request *rq,
			 struct slot *out);

/*
 * Folds a Redis reply's clock sample into the host's estimate, which all
 * its workers share, and translates at_us (Redis time) by it into
 * *local_us (CLOCK_MONOTONIC, us), *err_us (see clock_sync_local).
 * Returns 0 (nothing done) when the host's state is unavailable.
 */
int sched_local_clock(struct sched_local *l, const struct clock_sample *s,
		      int64_t at_us, int64_t *local_us, int64_t *err_us);

/*
 * Translates at_us by the host's estimate as it is now (see
 * clock_sync_translate). Returns 0 when the host's state is unavailable
 * or holds no estimate yet.
 */
int sched_local_clock_now(struct sched_local *l, int64_t at_us,
			  int64_t *local_us, int64_t *err_us);

/*
 * Settles a slot (from sched_local_reserve) as settle.lua does: mode
 * "release" (never sent: its slot unbooked from both timelines, its
 * charge given back), "answer" (the budgets' levels from o->so_limits,
 * allowing for the requests in flight; a refused request's charge given
 * back on the budgets the headers did not correct; a 429 that shows no
 * limit spent rests the budget for o->so_rest_ms, else KEY_COOLDOWN_MS;
 * the real usage o->so_used), "headers" (a probe's headers: as "answer"
 * without the usage) or "usage" (a probe's usage only), with o NULL for
 * a release. Returns settle.lua's answer: the limit a 429 ran out of
 * (0..5), 8 if it rested the budget, else -1.
 */
int sched_local_settle(struct sched_local *l, const struct slot *sl,
		       const char *mode, const struct sched_outcome *o);

/* Gives back rq's seat among its client's requests in flight, if held. */
void sched_local_client_done(struct sched_local *l,
			     const struct sched_request *rq);

/*
 * Rests key for ms on this host (never shortens a rest); disabled: a
 * disablement (401/403), as sched_inspect tells them apart.
 */
void sched_local_rest(struct sched_local *l, int key, long ms, int disabled);

/*
 * Fills v (sv_keys and sv_nkeys the caller's) from the host's state, as
 * sched_redis_inspect does from Redis: each key's state, last status and
 * counts today (recorded by sched_local_settle), the budgets, the
 * timelines' depth. Sets none of sv_from_redis, sv_redis_up,
 * sv_fallback. No-op (keys unknown) without a state.
 */
void sched_local_inspect(struct sched_local *l, struct sched_view *v);

#endif
